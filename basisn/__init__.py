"""BasisN: every kernel of every layer as quantized coefficients over one global basis.

The public API (names fixed: docs, notebooks and tests use them):
``BasisBank``, ``BasisConv2d``, ``BasisLinear``, ``to_basisn``, ``rebuild_weights``, ``to_dense``,
``save_basisn``, ``load_basisn``. The cost model and crossbar simulation live in ``basisn.hardware``.
"""

__version__ = "0.1.0"

from basisn.basis import load_basisn, save_basisn, to_basisn, to_dense
from basisn.layers import BasisBank, BasisConv2d, BasisLinear, attach_bank, basis_layers, rebuild_weights

__all__ = [
    "__version__",
    "BasisBank",
    "BasisConv2d",
    "BasisLinear",
    "attach_bank",
    "basis_layers",
    "load_basisn",
    "rebuild_weights",
    "save_basisn",
    "to_basisn",
    "to_dense",
]
