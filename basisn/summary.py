"""`basisn summary`: what `make repro` produced, in a few lines a person reads (one fact per line).

It reads the stage outputs only (outputs/evaluate, outputs/hardware, outputs/robustness), never recomputes
anything, and says for each missing output which `dvc repro` stage writes it. The full tables are in
paper_figures/ and the claim-by-claim verdict in CLAIMS.md (both written by the notebook stages).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

EVALUATE = "outputs/evaluate/metrics.json"
HW_EVAL = "outputs/hardware/hw_eval.json"
RATIOS = "outputs/hardware/ratios.csv"
ROBUSTNESS = "outputs/robustness/summary.csv"
TRADEOFF = "outputs/tradeoff"
MODEL_NETWORK = "pipeline_model"  # the name the hardware stage gives the pipeline's own model (dvc.yaml)


PAPER_NETWORK_DATASETS: dict[str, str] = {
    # basisn.hardware.networks.PAPER_NETWORKS as name -> dataset, without importing torch (that module builds the
    # models); tests/test_summary.py checks that the two agree.
    "resnet18": "ImageNet",
    "resnet34": "ImageNet",
    "resnet50": "ImageNet",
    "densenet121": "ImageNet",
    "cifar_resnet18": "CIFAR-100",
    "cifar_resnet34": "CIFAR-100",
    "cifar_densenet121": "CIFAR-100",
}
BELOW_BOUND = 0.01  # the abstract's "below 1%" of reprogramming, as a ratio
ACCURACY_BOUND_PP = 1.0  # "negligible accuracy loss": at most 1 pp below the dense baseline (our reading)
KEYS = ["network", "n_crossbars"]


def span(values, scale: float = 1.0, unit: str = "", digits: int = 3) -> str:
    """'a' or 'a-b' of values * scale (`digits` significant digits, whole numbers from 10**digits on: never
    '9.08e+03'), then `unit`: one number when both ends print alike, so a range never reads '0.5-0.5'."""
    low, high = float(min(values)) * scale, float(max(values)) * scale
    low_text, high_text = (f"{x:.{digits}g}" if abs(x) < 10**digits else f"{x:.0f}" for x in (low, high))
    return f"{low_text}{unit}" if low_text == high_text else f"{low_text}-{high_text}{unit}"


def percent(values) -> str:
    """A span of ratios as percentages ('11.9-31.2%'), the unit the abstract's '1%' is in."""
    return span(values, 100, "%")


def paper_networks(hw: dict) -> list[str]:
    """The networks hw-eval evaluated that are the paper's (hw_eval.json's order); a transformer or the pipeline's
    own model listed in hardware.networks is not one and never enters the paper-network verdicts."""
    return [name for name in hw["params"]["networks"] if name in PAPER_NETWORK_DATASETS]


def where(points: pd.DataFrame) -> str:
    """'resnet18 at N = 16, 64; cifar_resnet18 at N = 64' for rows with network and n_crossbars."""
    by_network = points.groupby("network", sort=False)["n_crossbars"]
    return "; ".join(f"{name} at N = {', '.join(map(str, sorted(ns)))}" for name, ns in by_network)


def below_verdict(base: pd.DataFrame, sweeps: pd.DataFrame, column: str, bound: float = BELOW_BOUND) -> str:
    """The verdict on "`column` below `bound`" at the base points (`base`: one row per paper network and report N):

    - "holds": every base point is below;
    - "holds only ...": some base points are below (named), and/or changing one setting of the base point (a sweep
      of `sweeps`, which must hold only the base preset's one-at-a-time sweeps at the same networks and N) puts
      every base point below (named);
    - "not reproduced: ...": neither.
    """
    below = base[base[column] < bound]
    if len(below) == len(base):
        return "holds"
    wanted = set(map(tuple, base[KEYS].to_numpy()))
    settings = []
    for sweep, part in sweeps.groupby("sweep", sort=True):
        for value, points in part.groupby(sweep, sort=True):
            if set(map(tuple, points[KEYS].to_numpy())) >= wanted and (points[column] < bound).all():
                settings.append(f"{sweep} = {value:g}")
    found = []
    if not below.empty:
        found.append(f"for {where(below)} (of {len(base)} base points)")
    if settings:
        found.append("at every base point with one setting changed: " + " or ".join(settings))
    if found:
        return "holds only " + "; and ".join(found)
    return (
        f"not reproduced: no base point is below {100 * bound:g}%, nor is every base point with any one setting changed"
    )


def beats_verdict(base: pd.DataFrame, columns: dict[str, str], bound: float = 1.0) -> str:
    """The verdict on "every ratio of `columns` (metric name -> column) is below `bound`" at the base points:
    "holds" (every metric, every point), "holds only for ..." (the metrics and points where it is, and the metrics
    where it never is), or "not reproduced: ..." (no metric at any point)."""
    reached, missed = [], []
    for metric, column in columns.items():
        below = base[base[column] < bound]
        if below.empty:
            missed.append(metric)
        else:
            reached.append(
                f"{metric} (every base point)" if len(below) == len(base) else f"{metric} for {where(below)}"
            )
    if not missed and all(part.endswith("(every base point)") for part in reached):
        return "holds"
    if reached:
        return "holds only for " + "; ".join(reached) + (f"; not for {' or '.join(missed)}" if missed else "")
    return f"not reproduced: {' and '.join(missed)} above {bound:g} at every base point"


def accuracy_lines(root: Path) -> list[str]:
    path = root / EVALUATE
    if not path.is_file():
        return [f"accuracy: {EVALUATE} missing: run `dvc repro evaluate`"]
    m = json.loads(path.read_text())
    return [
        f"profile {m['profile']}: {m['test_samples']} test images, basis of {m['n_basis']} vectors, "
        f"{m['coef_bits']}-bit coefficients",
        f"dense accuracy   {100 * m['dense_accuracy']:.2f}%",
        f"BasisN accuracy  {100 * m['basisn_accuracy']:.2f}% ({m['basisn_minus_dense_pp']:+.2f} pp vs dense; "
        f"{100 * m['decomposed_accuracy']:.2f}% before fine-tuning)",
    ]


def ratio_lines(root: Path) -> list[str]:
    if not (root / HW_EVAL).is_file() or not (root / RATIOS).is_file():
        return [f"hardware: {HW_EVAL} or {RATIOS} missing: run `dvc repro hardware`"]
    hw = json.loads((root / HW_EVAL).read_text())
    ratios = pd.read_csv(root / RATIOS)
    report = hw["params"]["report_crossbars"]
    main = ratios[(ratios["preset"] == hw["preset"]) & ratios["n_crossbars"].isin(report)]
    crossbars = ", ".join(map(str, report))
    lines = []
    networks = paper_networks(hw)
    paper = main[main["network"].isin(networks)]
    if not paper.empty:
        below = (
            int((paper["cycles_ratio_best"] < BELOW_BOUND).sum()),
            int((paper["edp_ratio_best"] < BELOW_BOUND).sum()),
        )
        lines.append(
            f"BasisN / best reprogramming schedule, paper networks ({', '.join(networks)}; N = {crossbars} "
            f"crossbars; preset {hw['preset']}): cycles {percent(paper['cycles_ratio_best'])}, "
            f"EDP {percent(paper['edp_ratio_best'])}, energy {percent(paper['energy_ratio_best'])}"
        )
        lines.append(
            f"below the paper's 1% of the best reprogramming schedule: cycles at {below[0]} of {len(paper)} points, "
            f"EDP at {below[1]} of {len(paper)}"
        )
        lines.append(
            f"BasisN / the dense network on BasisN's digital lanes: cycles {percent(paper['cycles_ratio_digital'])}, "
            f"EDP {percent(paper['edp_ratio_digital'])}"
        )
    model = main[main["network"] == MODEL_NETWORK]
    if not model.empty:
        lines.append(
            f"BasisN / best reprogramming schedule, the trained model: cycles {percent(model['cycles_ratio_best'])}, "
            f"EDP {percent(model['edp_ratio_best'])}, energy {percent(model['energy_ratio_best'])}"
            + (" (energy above reprogramming's)" if (model["energy_ratio_best"] > 1).any() else "")
        )
    return lines


def robustness_lines(root: Path) -> list[str]:
    path = root / ROBUSTNESS
    if not path.is_file():
        return [f"robustness: {ROBUSTNESS} missing: run `dvc repro robustness`"]
    summary = pd.read_csv(path)
    worst = summary.groupby("mapping")["accuracy_drop_pp"].max()
    return ["largest accuracy drop on simulated crossbars: " + ", ".join(f"{k} {v:.1f} pp" for k, v in worst.items())]


# --------------------------------------------------------------------------------------------------------------
# The headline on one configuration (the tradeoff stage): shared by notebooks/tradeoff.py, notebooks/claims.py
# and `basisn summary`, so the three never judge the same numbers by different rules.
# --------------------------------------------------------------------------------------------------------------
AGAINST_FIXED = {  # paired_verdict of an option against the fixed mask, as the answer says it
    "ahead": "`{option}` beats the fixed mask by more than the spread",
    "behind": "the fixed mask beats `{option}` by more than the spread",
    "within noise": "the difference is within the spread of the seeds",
    "untested": "one seed cannot tell them apart",
}
TRADEOFF_COSTS = {  # costs.csv column -> the table's name for it at the headline point
    "cycles_ratio_best": "cycles_vs_best",
    "edp_ratio_best": "edp_vs_best",
    "cycles_ratio": "cycles_vs_reprogram",
    "edp_ratio": "edp_vs_reprogram",
    "cycles_ratio_ideal": "cycles_vs_ideal",
    "edp_ratio_ideal": "edp_vs_ideal",
}


def _pareto(loss, cost) -> list[bool]:
    """True where no other point is at least as good on both (lower is better) and better on one."""
    loss, cost = list(loss), list(cost)
    return [
        not any(lo <= loss[i] and co <= cost[i] and (lo < loss[i] or co < cost[i]) for lo, co in zip(loss, cost))
        for i in range(len(loss))
    ]


def bound_verdict(mean: float, spread: float, bound: float) -> str:
    """'met', 'missed' or 'within noise' of a loss `mean` +- `spread` (the seeds' standard deviation) against a
    largest allowed loss `bound`: met when mean + spread <= bound, missed when mean - spread > bound, else within
    noise. One seed (spread NaN) is judged on its value alone: 'met' or 'missed'."""
    if math.isnan(spread):
        return "met" if mean <= bound else "missed"
    if mean + spread <= bound:
        return "met"
    return "missed" if mean - spread > bound else "within noise"


def paired_verdict(differences) -> str:
    """'ahead', 'behind' or 'within noise' of per-seed differences (ours minus the other's, higher is better):
    ahead only where the mean difference exceeds the differences' standard deviation (same seeds on both sides:
    same dense baseline and data order), behind where it is below minus that; one seed cannot tell ('untested')."""
    values = pd.Series(differences, dtype=float).dropna()
    if len(values) < 2:
        return "untested"
    mean, spread = values.mean(), values.std(ddof=1)
    if mean > spread:
        return "ahead"
    return "behind" if mean < -spread else "within noise"


def seed_statistics(results: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration `key` of results.csv (one row per key x seed): the first seed's settings, and the
    mean, standard deviation (ddof = 1; NaN for one seed), min and max over the seeds of the accuracy, the dense
    baseline's accuracy and the loss against the dense baseline of the same seed; `seeds` counts them."""
    results = results if "seed" in results else results.assign(seed=0)
    results = results.assign(accuracy_loss_pp=-results["accuracy_minus_dense_pp"])
    first = results.sort_values("seed").groupby("key", sort=False).first()
    by_key = results.groupby("key", sort=False)
    stats = {"seeds": by_key["seed"].nunique()}
    for column in ("accuracy", "dense_accuracy", "accuracy_loss_pp"):
        stats |= {
            column: by_key[column].mean(),
            f"{column}_sd": by_key[column].std(ddof=1),
            f"{column}_min": by_key[column].min(),
            f"{column}_max": by_key[column].max(),
        }
    table = first.drop(columns=["seed", "accuracy", "dense_accuracy", "accuracy_loss_pp"]).join(pd.DataFrame(stats))
    table["accuracy_minus_dense_pp"] = -table["accuracy_loss_pp"]
    return table.reset_index()


def _against_fixed(results: pd.DataFrame) -> pd.DataFrame:
    """Per full-fine-tune configuration of another option: its loss against the fixed mask's at the same G and
    coefficient bits, paired by seed (`vs_fixed_pp`: mean of fixed's loss minus its own, positive when it is more
    accurate; `vs_fixed_sd`; `vs_fixed`: `paired_verdict`)."""
    full = results[results["schedule"] == "full"]
    fixed = full[full["option"] == "fixed"].set_index(["groups", "coef_bits", "seed"])["accuracy_minus_dense_pp"]
    rows = []
    for key, part in full[full["option"] != "fixed"].groupby("key", sort=False):
        index = pd.MultiIndex.from_frame(part[["groups", "coef_bits", "seed"]])
        paired = pd.Series(part["accuracy_minus_dense_pp"].to_numpy(), index=index) - fixed.reindex(index)
        paired = paired.dropna()
        if paired.empty:
            continue
        rows.append(
            dict(
                key=key,
                vs_fixed_pp=paired.mean(),
                vs_fixed_sd=paired.std(ddof=1) if len(paired) > 1 else math.nan,
                vs_fixed=paired_verdict(paired),
            )
        )
    return pd.DataFrame(rows, columns=["key", "vs_fixed_pp", "vs_fixed_sd", "vs_fixed"])


def against_fixed_text(verdict: str, option: str) -> str:
    """AGAINST_FIXED's sentence for a `vs_fixed` verdict (no verdict: 'untested')."""
    return AGAINST_FIXED.get(verdict, AGAINST_FIXED["untested"]).format(option=option)


def loss_text(mean: float, spread: float, seeds: int) -> str:
    """'-0.66 +- 0.12 pp (3 seeds)' of a loss (printed as accuracy minus dense), or '-0.66 pp (1 seed)'."""
    if seeds < 2 or math.isnan(spread):
        return f"{-mean:+.2f} pp (1 seed)"
    return f"{-mean:+.2f} ± {spread:.2f} pp ({seeds} seeds)"


def tradeoff_table(
    results: pd.DataFrame, costs: pd.DataFrame, point: dict, accuracy_bound_pp: float = ACCURACY_BOUND_PP
) -> pd.DataFrame:
    """One row per trained configuration: its accuracy over the seeds (mean, spread) and its cost at the headline
    `point` (network, crossbars, preset), the worst cost over everything priced, its accuracy verdict against the
    bound (`bound_verdict`: met / missed / within noise), whether it meets each line and both (accuracy: met), and
    the Pareto fronts (of the mean loss)."""
    per_seed = results if "seed" in results else results.assign(seed=0)  # an older results.csv: one seed
    results = seed_statistics(per_seed).merge(_against_fixed(per_seed), on="key", how="left")
    at_point = costs[
        (costs["network"] == point["network"])
        & (costs["n_crossbars"] == point["crossbars"])
        & (costs["preset"] == point["preset"])
    ]
    if at_point.empty:
        raise ValueError(f"costs.csv has no row at the headline point {point}; check tradeoff.headline")
    worst = costs.groupby("key")[["cycles_ratio_best", "edp_ratio_best"]].max()
    worst.columns = ["worst_cycles_vs_best", "worst_edp_vs_best"]
    costed = at_point[["key", *TRADEOFF_COSTS]].rename(columns=TRADEOFF_COSTS)
    table = results.merge(costed, on="key", validate="one_to_one")
    table = table.merge(worst, left_on="key", right_index=True, validate="one_to_one")
    table["accuracy_verdict"] = [
        bound_verdict(mean, spread, accuracy_bound_pp)
        for mean, spread in zip(table["accuracy_loss_pp"], table["accuracy_loss_pp_sd"])
    ]
    table["meets_accuracy"] = table["accuracy_verdict"] == "met"
    table["meets_cycles"] = table["cycles_vs_best"] < BELOW_BOUND
    table["meets_edp"] = table["edp_vs_best"] < BELOW_BOUND
    table["meets_both"] = table["meets_accuracy"] & table["meets_cycles"] & table["meets_edp"]
    table["pareto_edp"] = _pareto(table["accuracy_loss_pp"], table["edp_vs_best"])
    table["pareto_cycles"] = _pareto(table["accuracy_loss_pp"], table["cycles_vs_best"])
    return table.sort_values(["schedule", "groups", "coef_bits", "option"]).reset_index(drop=True)  # full first


def _configuration(row) -> str:
    return (
        f"G = {row.groups}, {row.coef_bits}-bit coefficients, option `{row.option}` ({row.schedule} fine-tune): "
        f"accuracy {100 * row.accuracy:.2f}% ({loss_text(row.accuracy_loss_pp, row.accuracy_loss_pp_sd, row.seeds)}"
        " vs dense), EDP "
        f"{100 * row.edp_vs_best:.3g}% and cycles {100 * row.cycles_vs_best:.3g}% of the best reprogramming schedule"
    )


def tradeoff_answer(
    table: pd.DataFrame, point: dict, best_option: str, accuracy_bound_pp: float = ACCURACY_BOUND_PP
) -> list[str]:
    """The computed answer: the best configuration meeting both lines at the headline point, or, if none does,
    the closest on each side and by how much it misses; then the full fine-tunes of `best_option` against the
    fixed-mask reference at each G (mean +- spread over the seeds, and whether the difference exceeds the spread).
    "Within the bound" means `bound_verdict` says met: the loss plus its spread is at most the bound."""
    where = f"at {point['network']}, N = {point['crossbars']}, preset `{point['preset']}`"
    both = table[table["meets_both"]]
    lines = []
    if len(both):
        chosen = both.sort_values(["schedule", "edp_vs_best"]).iloc[0]  # a full fine-tune first
        lines.append(f"Meets both {where}: {_configuration(chosen)}.")
    else:
        lines.append(f"No trained configuration meets both {where}.")
        accurate = table[table["meets_accuracy"]]
        if len(accurate):
            factor = accurate[["edp_vs_best", "cycles_vs_best"]].max(axis=1) / BELOW_BOUND
            closest = accurate.loc[factor.idxmin()]
            lines.append(
                f"Of those within {accuracy_bound_pp:g} pp of dense (with their spread), the cheapest is "
                f"{_configuration(closest)}: "
                f"{factor.min():.3g}x the 1% line."
            )
        cheap = table[table["meets_edp"] & table["meets_cycles"]]
        if len(cheap):
            closest = cheap.loc[cheap["accuracy_loss_pp"].idxmin()]
            lines.append(
                f"Of those below 1% in both costs, the most accurate is {_configuration(closest)}: "
                f"{closest.accuracy_loss_pp - accuracy_bound_pp:.2f} pp beyond the {accuracy_bound_pp:g} pp line."
            )
    full = table[table["schedule"] == "full"]
    for groups, rows in full.groupby("groups"):
        rows = rows.set_index("option")
        if best_option not in rows.index:
            continue
        ours = rows.loc[best_option]
        text = f"Full fine-tune at G = {groups}: `{best_option}` " + loss_text(
            ours.accuracy_loss_pp, ours.accuracy_loss_pp_sd, ours.seeds
        )
        if "fixed" in rows.index and best_option != "fixed":
            fixed = rows.loc["fixed"]
            text += ", the fixed mask " + loss_text(fixed.accuracy_loss_pp, fixed.accuracy_loss_pp_sd, fixed.seeds)
            text += " (same run) vs dense: " + against_fixed_text(ours.vs_fixed, best_option)
        lines.append(text + ".")
    lines.append(f"{int(table['meets_both'].sum())} of {len(table)} trained configurations meet both lines {where}.")
    return lines


def groups_claim(
    table: pd.DataFrame, best_option: str, accuracy_bound_pp: float = ACCURACY_BOUND_PP
) -> tuple[str, str]:
    """CLAIMS row 5 from a `tradeoff_table`: the full fine-tunes of `best_option` at G > 1 (mean +- spread, the
    fixed mask at the same G and whether the difference exceeds the spread) and the verdict part: up to which G
    the loss is within the bound with its spread (`bound_verdict` met), and where it is within noise of it."""
    full = table[table["schedule"] == "full"]
    ours = full[(full["option"] == best_option) & (full["groups"] > 1)].sort_values("groups")
    reference = full[(full["option"] == "fixed") & (full["groups"] > 1)].set_index("groups")
    parts = []
    for row in ours.itertuples():
        text = f"G = {int(row.groups)}: {loss_text(row.accuracy_loss_pp, row.accuracy_loss_pp_sd, row.seeds)}"
        if row.groups in reference.index and best_option != "fixed":
            fixed = reference.loc[row.groups]
            versus = against_fixed_text(row.vs_fixed, best_option)
            text += (
                f" (fixed mask {loss_text(fixed.accuracy_loss_pp, fixed.accuracy_loss_pp_sd, fixed.seeds)}: {versus})"
            )
        parts.append(text)
    met = [int(g) for g, v in zip(ours["groups"], ours["accuracy_verdict"]) if v == "met"]
    noisy = [int(g) for g, v in zip(ours["groups"], ours["accuracy_verdict"]) if v == "within noise"]
    verdict = f"within {accuracy_bound_pp:g} pp " + (f"up to G = {max(met)}" if met else "at no G > 1")
    if noisy:
        verdict += f"; within noise of {accuracy_bound_pp:g} pp at G = {', '.join(map(str, noisy))}"
    return "; ".join(parts), verdict


def accuracy_claim(
    table: pd.DataFrame, dense: pd.DataFrame, accuracy_bound_pp: float = ACCURACY_BOUND_PP
) -> tuple[str, str] | None:
    """CLAIMS row 10 from a `tradeoff_table` and dense.csv: the dense baselines and the G = 1 full fine-tune
    (the finetune stage's configuration) over the seeds, and 'within' / 'beyond' / 'within noise of' the bound
    (`bound_verdict` of the paired loss). None when no G = 1 full fine-tune was trained."""
    rows = table[(table["schedule"] == "full") & (table["groups"] == 1)]
    if rows.empty:
        return None
    row = rows.iloc[0]
    spread = dense["dense_accuracy"].std(ddof=1) if len(dense) > 1 else math.nan
    dense_text = f"{100 * dense['dense_accuracy'].mean():.2f}%" + (f" ± {100 * spread:.2f}%" if len(dense) > 1 else "")
    ours = f"{100 * row.accuracy:.2f}%" + (f" ± {100 * row.accuracy_sd:.2f}%" if row.seeds > 1 else "")
    text = (
        f"dense {dense_text}, BasisN (G = 1, {int(row.coef_bits)}-bit, full fine-tune) {ours}: "
        f"{loss_text(row.accuracy_loss_pp, row.accuracy_loss_pp_sd, row.seeds)} vs the dense baseline of the same "
        "seed (mean ± standard deviation over the seeds)"
    )
    word = {"met": "within", "missed": "beyond", "within noise": "within noise of"}[row.accuracy_verdict]
    return text, word


def both_claim(table: pd.DataFrame) -> str:
    """CLAIMS row 12's verdict: a configuration meets both (accuracy met with its spread, both costs below 1%),
    or only within noise of the accuracy bound, or none."""
    if table["meets_both"].any():
        return "holds at the headline point"
    cheap = table[table["meets_cycles"] & table["meets_edp"]]
    if (cheap["accuracy_verdict"] == "within noise").any():
        return "within noise: a configuration below 1% in both costs is within the spread of the accuracy bound"
    return "not reproduced: no trained configuration meets both at the headline point"


def tradeoff_lines(root: Path) -> list[str]:
    directory = root / TRADEOFF
    if not all((directory / name).is_file() for name in ("results.csv", "costs.csv", "params.json")):
        return [f"headline on one configuration: {TRADEOFF} missing: run `dvc repro tradeoff`"]
    stage = json.loads((directory / "params.json").read_text())
    table = tradeoff_table(
        pd.read_csv(directory / "results.csv"), pd.read_csv(directory / "costs.csv"), stage["tradeoff"]["headline"]
    )
    return [
        "headline on one configuration: " + line
        for line in tradeoff_answer(table, stage["tradeoff"]["headline"], stage["tradeoff"]["best"])[:1]
    ]


def seconds_text(value: float) -> str:
    """A time as a person writes it: 100 ns, 20 us, 1 ms."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if value >= scale * 0.9995:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} s"


def n_ranges(ns: list[int], grid: list[int]) -> str:
    """'8-512, 4096' for the N of `ns`, runs of consecutive values of the sorted `grid` joined by a dash."""
    grid = sorted(grid)
    runs: list[list[int]] = []
    for n in sorted(ns):
        if runs and grid.index(n) == grid.index(runs[-1][-1]) + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def region_sentence(smallest: pd.DataFrame, metric: str, write_grid: list[float], batch: int = 1) -> str:
    """Where `metric` (a ratio of smallest_write.csv) is below the bound for every network together, per G at
    batch `batch`: the row write time it takes at each N (runs of N needing the same time joined), e.g.
    'G = 8: >= 20 us at N = 8-64, >= 5 us at N = 128'. N where it holds at the cheapest write of the grid are named
    as such: there the write cost is not what decides."""
    rows = smallest[(smallest["metric"] == metric) & (smallest["batch"] == batch)]
    grid = sorted(rows["n_crossbars"].unique().tolist())
    cheapest, dearest = min(write_grid), max(write_grid)
    parts = []
    for groups, part in rows.groupby("groups", sort=True):
        need = part.groupby("n_crossbars")["smallest_row_write_s"].agg(lambda v: v.max() if v.notna().all() else None)
        held = need.dropna()
        if held.empty:
            parts.append(f"G = {groups}: at no N up to {grid[-1]}, even at {seconds_text(dearest)} per row write")
            continue
        texts = []
        for value, ns in held.groupby(held, sort=False):
            ns_text = n_ranges(list(ns.index), grid)
            if value <= cheapest:
                texts.append(f"at any write time of the grid (>= {seconds_text(cheapest)}) at N = {ns_text}")
            else:
                texts.append(f">= {seconds_text(value)} at N = {ns_text}")
        never = [n for n in grid if n not in held.index]
        if never:
            texts.append(f"not at N = {n_ranges(never, grid)} up to {seconds_text(dearest)}")
        parts.append(f"G = {groups}: " + ", ".join(texts))
    return "; ".join(parts)


def digital_region_sentence(region: pd.DataFrame, column: str, batch: int = 1, bound: float = 1.0) -> str:
    """Where BasisN / digital (`column`) is below `bound` for every network together, per G at batch `batch`
    (the digital baseline and BasisN do not depend on the write cost: any one write time of the grid)."""
    rows = region[(region["batch"] == batch) & (region["row_write_s"] == region["row_write_s"].min())]
    grid = sorted(rows["n_crossbars"].unique().tolist())
    parts = []
    for groups, part in rows.groupby("groups", sort=True):
        below = part.groupby("n_crossbars")[column].max() < bound
        held = [int(n) for n, ok in below.items() if ok]
        parts.append(f"G = {groups}: " + (f"at N = {n_ranges(held, grid)}" if held else f"at no N up to {grid[-1]}"))
    return "; ".join(parts)


def summary_lines(root: Path) -> list[str]:
    lines = accuracy_lines(root) + ratio_lines(root) + tradeoff_lines(root) + robustness_lines(root)
    lines.append("figures and tables: paper_figures/ (listed in docs/figures.md); claim by claim: CLAIMS.md")
    lines.append("executed notebooks: runs/; all metrics: `dvc metrics show`; compare with the reference: ARTIFACT.md")
    return lines


def summary_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="basisn summary", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository root (where outputs/ is)")
    args = parser.parse_args(argv)
    if not (args.root / "dvc.yaml").is_file():
        print(f"basisn summary: {args.root} is not the repository root (no dvc.yaml there)", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(args.root)))
    return 0
