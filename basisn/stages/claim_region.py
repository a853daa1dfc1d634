"""`claim_region` stage (`basisn claim-region`): where the paper's "below 1% of reprogramming" would hold, and which
hardware constants the verdict rests on (basisn.hardware.region).

For the networks of `claim_region.networks` under the `hardware:` block's preset, overrides and basis, every row
write time x N x B x G of the `claim_region:` grid (region.csv), the smallest write time from which each ratio stays
below `claim_region.bound` (smallest_write.csv), and every numeric HardwareConfig field x0.5 and x2, one at a time,
at one point (sensitivity.csv), and the cost model against published numbers (validation.csv,
basisn.hardware.validation). claim_region.json records what was used, with each preset's own row write time
(row_write_seconds: the verify iterations x the pulse-and-verify time x the passes
of `write_cols`), the points the figure marks. Written atomically into --out. Needs no training: it
runs from layer shapes in seconds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from basisn.atomic import atomic_directory, atomic_write_json
from basisn.hardware.config import PRESETS
from basisn.hardware.networks import paper_shapes
from basisn.hardware.region import REGION_COLUMNS, region, row_write_seconds, sensitivity, smallest_write_cost
from basisn.hardware.settings import resolve_block
from basisn.hardware.validation import VALIDATION_BAND, validation_table
from basisn.stages.common import StageError, one_line_errors, parser, prepare
from basisn.stages.hardware import load_block


@one_line_errors
def main(argv: list[str]) -> int:
    """`claim_region` stage entry point: every check before any work, then the grid and the sensitivity."""
    arguments = parser(
        "claim-region", "where BasisN / reprogramming is below 1%, and its sensitivity", "outputs/claim_region"
    )
    args = arguments.parse_args(argv)
    p, lock = prepare(args, data=False)
    try:
        hw, config, basis = resolve_block(load_block(Path(args.params), args.profile))
    except ValueError as error:  # HwParamsError: already one line naming the key
        raise StageError(str(error).removeprefix("basisn: ")) from None
    block = p["claim_region"]
    for g in block["groups"]:
        if basis.n_basis % g:
            raise StageError(
                f"params: claim_region.groups contains {g}, which does not divide hardware.basis.n_basis="
                f"{basis.n_basis}; allowed: divisors of n_basis"
            )
    needed = -(-basis.n_basis * config.cols_per_weight // config.cols)  # one basis copy, as hardware.settings
    for key, values in (
        ("crossbars", block["crossbars"]),
        ("sensitivity.crossbars", [block["sensitivity"]["crossbars"]]),
    ):
        if min(values) < needed:
            raise StageError(
                f"params: claim_region.{key} contains {min(values)}; basisn needs at least {needed} crossbars for "
                f"n_basis={basis.n_basis}; allowed: integers >= {needed}"
            )
    with lock:
        return _claim_region(p, args, hw, config, basis)


def _claim_region(p: dict, args: argparse.Namespace, hw: dict, config, basis) -> int:
    started = time.perf_counter()
    block = p["claim_region"]
    networks = {
        name: paper_shapes(name) for name in dict.fromkeys([*block["networks"], block["sensitivity"]["network"]])
    }
    table = region(
        {name: networks[name] for name in block["networks"]},
        config,
        basis,
        block["row_write_s"],
        block["crossbars"],
        block["batches"],
        block["groups"],
    )
    smallest = [
        smallest_write_cost(table, column, block["bound"]).assign(metric=column)
        for column in ("cycles_ratio", "edp_ratio")
    ]
    sens = block["sensitivity"]
    tornado = sensitivity(
        networks[sens["network"]], config, basis, sens["crossbars"], sens["batch"], factors=sens["factors"]
    )
    marked = dict.fromkeys([hw["preset"], *hw["compare_presets"]])  # the presets hw-eval prices
    presets = {name: {"row_write_s": row_write_seconds(PRESETS[name])} for name in marked}
    presets[hw["preset"]] = {"row_write_s": row_write_seconds(config)}  # with its overrides
    facts = dict(
        claim_region=block,
        preset=hw["preset"],
        config=config.as_dict(),
        basis=basis.as_dict(),
        presets=presets,
        report_crossbars=hw["report_crossbars"],
        validation_band=list(VALIDATION_BAND),
        columns=list(REGION_COLUMNS),
        profile=p["profile"],
    )
    with atomic_directory(Path(args.out)) as out:
        table.to_csv(out / "region.csv", index=False)
        pd.concat(smallest, ignore_index=True).to_csv(out / "smallest_write.csv", index=False)
        tornado.to_csv(out / "sensitivity.csv", index=False)
        validation_table().to_csv(out / "validation.csv", index=False)
        atomic_write_json(out / "claim_region.json", facts)
    print(
        f"claim-region: {len(table)} points ({len(block['networks'])} networks x {len(block['row_write_s'])} write "
        f"times x {len(block['crossbars'])} N x {len(block['batches'])} B x {len(block['groups'])} G) and "
        f"{len(tornado)} sensitivity rows in {time.perf_counter() - started:.1f}s -> {args.out}"
    )
    return 0
