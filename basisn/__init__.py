"""BasisN: every kernel of every layer as quantized coefficients over one global basis.

The public API (names fixed: docs, notebooks and tests use them):
``BasisBank``, ``BasisConv2d``, ``BasisLinear``, ``BasisMultiheadAttention``, ``to_basisn``, ``rebuild_weights``,
``to_dense``, ``save_basisn``, ``load_basisn``; for loops that pick layers by type, ``is_conv``, ``is_linear``,
``weight_parameters``. The cost model and crossbar simulation live in ``basisn.hardware``.

The names are imported on first use (PEP 562), so that `import basisn.figures` (every notebook) and
`basisn notebook` do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "BasisBank": "basisn.layers",
    "BasisConv2d": "basisn.layers",
    "BasisLinear": "basisn.layers",
    "BasisMultiheadAttention": "basisn.layers",
    "attach_bank": "basisn.layers",
    "basis_layers": "basisn.layers",
    "is_conv": "basisn.layers",
    "is_linear": "basisn.layers",
    "weight_parameters": "basisn.layers",
    "rebuild_weights": "basisn.layers",
    "load_basisn": "basisn.basis",
    "save_basisn": "basisn.basis",
    "to_basisn": "basisn.basis",
    "to_dense": "basisn.basis",
}

__all__ = [  # literal, so that linters see the re-exports below
    "__version__",
    "BasisBank",
    "BasisConv2d",
    "BasisLinear",
    "BasisMultiheadAttention",
    "attach_bank",
    "basis_layers",
    "is_conv",
    "is_linear",
    "load_basisn",
    "rebuild_weights",
    "save_basisn",
    "to_basisn",
    "to_dense",
    "weight_parameters",
]

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from basisn.basis import load_basisn, save_basisn, to_basisn, to_dense
    from basisn.layers import (
        BasisBank,
        BasisConv2d,
        BasisLinear,
        BasisMultiheadAttention,
        attach_bank,
        basis_layers,
        is_conv,
        is_linear,
        rebuild_weights,
        weight_parameters,
    )


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'basisn' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
