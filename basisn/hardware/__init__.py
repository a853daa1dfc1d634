"""Hardware evaluation of BasisN: the crossbar cost model (docs/method.md §2) and its presets.

Public API (docs/hardware.md): ``HardwareConfig``, ``BasisSpec``, ``PRESETS``, ``preset``; ``layer_shapes``,
``LayerShape``, ``NetworkShapes``, ``save_shapes``, ``load_shapes``; ``evaluate``, ``evaluate_all``, ``sweep``,
``ratios``, ``floor_cycles``, ``min_crossbars``, ``total_tiles``, ``replica_counts``, ``reprogram_schedules`` (every
schedule reprogram_best picks from), ``SCHEMES`` (ideal, reprogram, reprogram_pingpong, reprogram_best, basisn,
digital); ``choices_table`` (which side each modelling choice favours, measured); for your own model,
``compare`` (one table of every scheme), ``readable``, ``plot_compare`` and ``format_ratio``. The CLI is
``basisn hw-eval`` (the hardware stage, ``basisn.stages.hardware``; its params block: ``basisn.hardware.settings``).
Importing this package needs only torch, numpy and pandas.
"""

from basisn.hardware.compare import compare, format_ratio, plot_compare, readable
from basisn.hardware.config import PRESETS, BasisSpec, HardwareConfig, preset
from basisn.hardware.cost import (
    SCHEMES,
    Evaluation,
    basis_layouts,
    evaluate,
    evaluate_all,
    floor_cycles,
    min_crossbars,
    ratios,
    replica_counts,
    reprogram_schedules,
    sweep,
    total_tiles,
)
from basisn.hardware.fairness import CHOICES, choices_table
from basisn.hardware.shapes import LayerShape, NetworkShapes, layer_shapes, load_shapes, save_shapes

__all__ = [
    "CHOICES",
    "PRESETS",
    "SCHEMES",
    "BasisSpec",
    "Evaluation",
    "HardwareConfig",
    "LayerShape",
    "NetworkShapes",
    "basis_layouts",
    "choices_table",
    "compare",
    "evaluate",
    "evaluate_all",
    "floor_cycles",
    "format_ratio",
    "layer_shapes",
    "load_shapes",
    "min_crossbars",
    "plot_compare",
    "preset",
    "ratios",
    "readable",
    "replica_counts",
    "reprogram_schedules",
    "save_shapes",
    "sweep",
    "total_tiles",
]
