"""The cost model against numbers that others published: each published value, the configuration that reproduces its
setting with our formulas, our value and the ratio (docs/hardware.md, "Validation against published numbers").

What these check, and what they cannot: ISAAC's throughput and analog power check the `ideal` (resident) mapping's
cycle and energy arithmetic; our energy constants come from the same ISAAC table, so the power row checks how they
are combined, not the constants themselves. NeuRRAM's write-verify time checks the write model (rows one after
another, `write_cols` cells of a row at a time). PUMA's MVMU is an independent design with ISAAC-derived models: a
cross-check of one crossbar read's latency and energy. VALIDATION_BAND is the band the ratios must stay in
(tests/test_region.py); docs/hardware.md says why each row sits where it does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from basisn.hardware.config import HardwareConfig, preset
from basisn.hardware.cost import evaluate
from basisn.hardware.shapes import LayerShape, NetworkShapes

VALIDATION_BAND = (0.5, 2.0)  # ours / published: within a factor of two (docs/hardware.md says why)

# ISAAC (Shafiee et al., ISCA 2016, corrected version of Oct 2016): Table I, ISAAC-CE: 168 tiles x 12 IMAs x 8
# crossbars of 128x128 2-bit cells; a 16-bit weight in 8 cells, biased, not a differential pair (Sec. V), so our
# 2 x slices columns per weight is matched with weight_bits = 8 (8 columns); 16-bit inputs, 1-bit DACs (16 steps of
# 100 ns, Sec. IV-V).
ISAAC_CROSSBARS = 168 * 12 * 8
ISAAC = {"weight_bits": 8, "input_bits": 16, "dac_bits": 1}
# NeuRRAM (Wan et al., Nature 608, 2022): 256x256 cells per core, a weight as the difference of two cells (Methods),
# cells selected one at a time in programming mode (Methods, "Core block diagram").
NEURRAM_CORE = {"rows": 256, "cols": 256, "cell_bits": 4, "weight_bits": 4, "write_cols": 1, "verify_iters": 1}


@dataclass(frozen=True)
class Published:
    """One published number: what, where, its value, and the configuration that reproduces its setting."""

    name: str
    source: str  # paper, table/section
    quantity: str
    unit: str
    published: float
    note: str  # how the published value is read (derived from two published numbers, an assumption, ...)


def _layer(rows: int, outputs: int, copies: int = 1) -> NetworkShapes:
    """A layer that fills `copies` crossbars exactly: `rows` inputs, `outputs` weights per crossbar row."""
    return NetworkShapes("validation", (1,), [LayerShape("fill", "conv", 1, copies, rows, outputs)])


def _isaac_chip() -> dict[str, float]:
    config = preset("default", **ISAAC)
    outputs = config.cols // config.cols_per_weight
    totals = evaluate(_layer(config.rows, outputs, ISAAC_CROSSBARS), config, "ideal", ISAAC_CROSSBARS).totals
    macs = ISAAC_CROSSBARS * config.rows * outputs
    return {"ops_per_s": 2 * macs / totals["latency_s"], "power_w": totals["energy_j"] / totals["latency_s"]}


def _neurram_core_seconds() -> float:
    config: HardwareConfig = preset("neurram", **NEURRAM_CORE, t_write_iter=56e-6)
    outputs = config.cols // config.cols_per_weight  # 128 weights on 256 columns: every cell of the core
    return float(evaluate(_layer(config.rows, outputs), config, "ideal", 1).totals["program_once_latency_s"])


def _puma_mvmu() -> dict[str, float]:
    config = preset("default", **ISAAC)  # PUMA's MVMU models are adapted from ISAAC's (PUMA Sec. 6.1)
    # one 128x128 matrix of 16-bit weights in 8 cells each: 8 crossbars side by side (our assumption)
    totals = evaluate(_layer(128, 128), config, "ideal", 64).totals
    return {"latency_s": float(totals["latency_s"]), "energy_j": float(totals["energy_j"])}


PUBLISHED: tuple[tuple[Published, Any], ...] = (
    (
        Published(
            "isaac_peak_throughput",
            "ISAAC, ISCA 2016: Table IV (ISAAC-CE PE = 627.5 GOPs/W) x Table I (chip total 65.8 W)",
            "peak throughput, 16-bit operations",
            "ops/s",
            627.5e9 * 65.8,
            "derived: power efficiency x chip power; all 16,128 crossbars busy, a multiply and an add = 2 operations",
        ),
        lambda: _isaac_chip()["ops_per_s"],
    ),
    (
        Published(
            "isaac_analog_power",
            "ISAAC, ISCA 2016: Table I per IMA: ADC 16 + DAC 4 + S+H 0.01 + arrays 2.4 + S+A 0.2 mW, x 12 IMAs x 168",
            "power of the crossbars, DACs, S+H, ADCs and shift-add units of the chip",
            "W",
            (16 + 4 + 0.01 + 2.4 + 0.2) * 1e-3 * 12 * 168,
            "derived: the sum of Table I's analog components; eDRAM, buffers, router, HyperTransport left out",
        ),
        lambda: _isaac_chip()["power_w"],
    ),
    (
        Published(
            "neurram_core_write_verify",
            "NeuRRAM, Nature 2022: Methods, 'such write-verify will take on average 56 us per cell'; 256x256 cores",
            "write-verify time of one full core, integrated on chip",
            "s",
            56e-6 * 256 * 256,
            "derived: 56 us per cell x 65,536 cells, written one cell at a time",
        ),
        _neurram_core_seconds,
    ),
    (
        Published(
            "puma_mvmu_latency",
            "PUMA, ASPLOS 2019: Sec. 7.4.3, 'a memristive 128x128 MVMU performs 16,384 MACs in 2304 ns'",
            "latency of one 128x128 MVM, 16-bit",
            "s",
            2304e-9,
            "quoted; our MVMU: 8 crossbars, a 16-bit weight in 8 2-bit cells as ISAAC's (PUMA's text does not say)",
        ),
        lambda: _puma_mvmu()["latency_s"],
    ),
    (
        Published(
            "puma_mvmu_energy",
            "PUMA, ASPLOS 2019: Sec. 7.4.3, '... consuming 43.97 nJ'",
            "energy of one 128x128 MVM, 16-bit",
            "J",
            43.97e-9,
            "quoted; same MVMU as the row above",
        ),
        lambda: _puma_mvmu()["energy_j"],
    ),
)


def validation_table() -> pd.DataFrame:
    """One row per published number: source, quantity, unit, published, ours, ratio (ours / published), in_band."""
    rows = []
    for published, ours in PUBLISHED:
        value = float(ours())
        rows.append(
            dict(
                name=published.name,
                source=published.source,
                quantity=published.quantity,
                unit=published.unit,
                published=published.published,
                ours=value,
                ratio=value / published.published,
                note=published.note,
            )
        )
    table = pd.DataFrame(rows)
    table["in_band"] = table["ratio"].between(*VALIDATION_BAND)
    return table
