"""BasisN: every kernel of every layer as quantized coefficients over one global basis.

The public API (names fixed: docs, notebooks and tests use them):
``BasisBank``, ``BasisConv2d``, ``BasisLinear``, ``to_basisn``, ``rebuild_weights``, ``to_dense``,
``save_basisn``, ``load_basisn``.
"""

__version__ = "0.1.0"
