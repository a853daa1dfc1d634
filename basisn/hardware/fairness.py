"""Which side each modelling choice of the cost model favours, measured (docs/hardware.md section 4).

A hardware reviewer's first question of a comparison is which of its choices favour which side, and by how much.
`choices_table` answers it for every choice of CHOICES: it prices BasisN, the best reprogramming schedule and the
digital baseline with the default and with the alternative, and reports the BasisN ratios both ways. Which side a
choice favours is read from those numbers (`favours`), never typed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from basisn.hardware.config import HardwareConfig
from basisn.hardware.cost import ratios, sweep
from basisn.hardware.shapes import NetworkShapes

SCHEMES = ("reprogram_best", "basisn", "digital")
NEUTRAL = 0.005  # a ratio moving by less than 0.5% favours neither side


@dataclass(frozen=True)
class Choice:
    """One modelling choice: its default (in words), the alternative a reviewer would propose, the fields it sets."""

    name: str
    default: str
    alternative: str
    changes: Mapping[str, Any] = field(default_factory=dict)


CHOICES: tuple[Choice, ...] = (
    Choice("write_cols", "whole rows written at once", "8 cells of a row at a time (NeuroSim column mux)",
           {"write_cols": 8}),
    Choice("write_cols_1", "whole rows written at once", "1 cell at a time (NeuRRAM's programming code)",
           {"write_cols": 1}),
    Choice("write_crossbars", "every crossbar of a round written at once", "16 crossbars at once (write drivers)",
           {"write_crossbars": 16}),
    Choice("verify_iters", "10 write-verify iterations per cell", "20 (NeuRRAM's limit, the method's prototype)",
           {"verify_iters": 20}),
    Choice("memory", "the baseline's rewritten weights arrive free", "their SRAM/DRAM traffic charged",
           {"memory": True}),
    Choice("reprogram_replicate", "rounds of whole layers with copies", "no copies in rounds",
           {"reprogram_replicate": False}),
    Choice("reprogram_pipeline", "a round's layers pipelined", "a round's layers one after another",
           {"reprogram_pipeline": False}),
    Choice("e_verify_read", "verify reads charged (1.672 pJ per cell)", "verify reads free", {"e_verify_read": 0.0}),
    Choice("coef_operand_bits", "coefficient MACs on 16-bit basis outputs", "on 8-bit operands",
           {"coef_operand_bits": 8}),
    Choice("operand_delivery", "MAC operands delivered from SRAM/DRAM", "operands free for both digital schemes",
           {"operand_delivery": False}),
    Choice("static", "idle leakage charged", "no leakage", {"p_static_crossbar": 0.0, "p_static_lanes": 0.0}),
)  # fmt: skip
METRICS = ("cycles_ratio_best", "edp_ratio_best", "edp_ratio_digital")


def choices_table(
    networks: NetworkShapes | Iterable[NetworkShapes] | Mapping[str, NetworkShapes],
    config: HardwareConfig,
    crossbars: Sequence[int],
    batch: int = 1,
    choices: Sequence[Choice] = CHOICES,
    memo: dict | None = None,
) -> pd.DataFrame:
    """One row per choice x network x N: BasisN / reprogram_best cycles and EDP and BasisN / digital EDP, with the
    default (`<metric>`) and with the alternative (`<metric>_alt`), and their quotient (`<metric>_change`: below 1,
    the alternative makes BasisN look better, so the default favours the baseline). Each network is priced with its
    own basis. `memo`: shared with other sweeps (sweep's memo)."""
    memo = {} if memo is None else memo

    def priced(cfg: HardwareConfig) -> pd.DataFrame:
        frame = sweep(networks, cfg, list(crossbars), schemes=SCHEMES, batch=batch, memo=memo)
        table = ratios(frame, baseline="reprogram_best", others={"digital": "digital"})
        table = table.rename(columns={"cycles_ratio": "cycles_ratio_best", "edp_ratio": "edp_ratio_best"})
        return table.set_index(["network", "n_crossbars"])[list(METRICS)]

    default = priced(config)
    rows = []
    for choice in choices:
        alternative = priced(config.replace(**choice.changes))
        both = default.join(alternative.add_suffix("_alt"))
        for metric in METRICS:
            both[f"{metric}_change"] = both[f"{metric}_alt"] / both[metric]
        rows.append(both.reset_index().assign(choice=choice.name, default=choice.default,
                                              alternative=choice.alternative))  # fmt: skip
    table = pd.concat(rows, ignore_index=True)
    first = ["choice", "default", "alternative", "network", "n_crossbars"]
    return table[first + [c for c in table if c not in first]]


def favours(change: float) -> str:
    """The side a default favours, from `<metric>_change` (alternative / default of a BasisN ratio)."""
    if change < 1 - NEUTRAL:
        return "baseline"
    if change > 1 + NEUTRAL:
        return "BasisN"
    return "neither"


__all__ = ["CHOICES", "Choice", "choices_table", "favours"]
