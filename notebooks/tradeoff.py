# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python (basisn)
#     language: python
#     name: basisn
# ---

# %% [markdown]
# # Headline on one configuration: accuracy loss against cycles and EDP, the same trained models
#
# **What the paper claims.** Both at once: cycles and EDP below 1% of the reprogramming baseline, and negligible
# accuracy loss, thanks to "a novel training approach to enhance computation parallelization with the global
# basis vectors" (arXiv 2407.03738, abstract).
#
# **What we measure.** The `tradeoff` stage trains, from one dense baseline, every configuration of G (coefficient
# groups) x coefficient bits x training option (docs/method.md §1.3: `fixed` is the reference method, each
# segment's group chosen once at decomposition; the others are our parallelization-aware options), scores each on
# the test set, and prices exactly that configuration with the cost model (docs/hardware.md). Two fine-tunes:
# `short` (the grid: a few epochs on a train subset, a trend, not a converged number) and `full` (the main
# configurations: the `finetune:` schedule on every train image). One point per trained configuration; the
# cost axis is BasisN / the best reprogramming schedule (`reprogram_best`, the fair baseline) at the headline
# point of `tradeoff.headline` (network, crossbar count N, preset). The table also holds BasisN / plain
# `reprogram` and / `ideal`, and the worst ratio over every priced network, N and preset.
#
# **Parameters.** `tradeoff_dir`: the stage's output directory (results.csv, costs.csv, params.json).

# %% tags=["parameters"]
out_dir = "paper_figures"
tradeoff_dir = "outputs/tradeoff"

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from basisn.figures import save_figure, save_table, set_style, show
from basisn.notebooks import at_repo_root, require

at_repo_root()  # JupyterLab starts the kernel in notebooks/; paths are from the repository root
require(*(f"{tradeoff_dir}/{name}" for name in ("results.csv", "costs.csv", "params.json")))
set_style()
print("notebook parameters:", json.dumps({"tradeoff_dir": tradeoff_dir}))
path = Path(tradeoff_dir)
stage = json.loads((path / "params.json").read_text())
print(json.dumps({k: stage[k] for k in ("tradeoff", "decompose", "finetune", "hardware")}, indent=1, sort_keys=True))
results = pd.read_csv(path / "results.csv")
costs = pd.read_csv(path / "costs.csv")
point = stage["tradeoff"]["headline"]
best_option = stage["tradeoff"]["best"]
ACCURACY_LINE_PP = 1.0  # "negligible accuracy loss": at most 1 pp below the dense baseline (our reading)
COST_LINE = 0.01  # the paper's "below 1%"

# %% [markdown]
# ## Table: one row per trained configuration, accuracy and cost side by side

# %%
at_point = costs[
    (costs["network"] == point["network"])
    & (costs["n_crossbars"] == point["crossbars"])
    & (costs["preset"] == point["preset"])
]
if at_point.empty:
    raise ValueError(f"costs.csv has no row at the headline point {point}; check tradeoff.headline")
COST_COLUMNS = {
    "cycles_ratio_best": "cycles_vs_best",
    "edp_ratio_best": "edp_vs_best",
    "cycles_ratio": "cycles_vs_reprogram",
    "edp_ratio": "edp_vs_reprogram",
    "cycles_ratio_ideal": "cycles_vs_ideal",
    "edp_ratio_ideal": "edp_vs_ideal",
}
worst = costs.groupby("key")[["cycles_ratio_best", "edp_ratio_best"]].max()
worst = worst.rename(columns={"cycles_ratio_best": "worst_cycles_vs_best", "edp_ratio_best": "worst_edp_vs_best"})
table = results.merge(at_point[["key", *COST_COLUMNS]].rename(columns=COST_COLUMNS), on="key", validate="one_to_one")
table = table.merge(worst, left_on="key", right_index=True, validate="one_to_one")
table["accuracy_loss_pp"] = -table["accuracy_minus_dense_pp"]
table["meets_accuracy"] = table["accuracy_loss_pp"] <= ACCURACY_LINE_PP
table["meets_cycles"] = table["cycles_vs_best"] < COST_LINE
table["meets_edp"] = table["edp_vs_best"] < COST_LINE
table["meets_both"] = table["meets_accuracy"] & table["meets_cycles"] & table["meets_edp"]


def pareto(frame, cost):
    """True for configurations no other one beats on both accuracy loss and `cost` (lower is better in both)."""
    loss, value = frame["accuracy_loss_pp"].to_numpy(), frame[cost].to_numpy()
    return [
        not any((loss <= loss[i]) & (value <= value[i]) & ((loss < loss[i]) | (value < value[i])))
        for i in range(len(frame))
    ]


table["pareto_edp"] = pareto(table, "edp_vs_best")
table["pareto_cycles"] = pareto(table, "cycles_vs_best")
columns = [
    "key",
    "n_basis",
    "segment_len",
    "groups",
    "coef_bits",
    "coef_quant",
    "option",
    "schedule",
    "finetune_epochs",
    "train_images_subset",
    "same_as",
    "trained_by",
    "rel_error_mean",
    "decomposed_accuracy",
    "accuracy",
    "dense_accuracy",
    "accuracy_loss_pp",
    *COST_COLUMNS.values(),
    "worst_cycles_vs_best",
    "worst_edp_vs_best",
    "meets_accuracy",
    "meets_cycles",
    "meets_edp",
    "meets_both",
    "pareto_edp",
    "pareto_cycles",
]
table = table[columns].sort_values(["schedule", "groups", "coef_bits", "option"])  # "full" before "short"
table = table.reset_index(drop=True)
save_table(table, out_dir, "headline_tradeoff")
display(table)

# %% [markdown]
# ## Figure: accuracy loss against EDP and cycles, one point per configuration
#
# Colour: G. Marker: training option. Filled: full fine-tune; hollow: the grid's short fine-tune. Dashed: the
# paper's 1% (vertical) and 1 pp of accuracy loss (horizontal). Grey rings and line: the Pareto front over all
# points (no other configuration is at least as good on both axes and better on one).

# %%
palette = dict(zip(sorted(table["groups"].unique()), sns.color_palette("colorblind", table["groups"].nunique())))
marker_cycle = ["o", "s", "^", "D", "v", "P", "X"]
markers = {name: marker_cycle[i % len(marker_cycle)] for i, name in enumerate(dict.fromkeys(table["option"]))}
fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.6), sharey=True)
for ax, cost, label, front in (
    (axes[0], "edp_vs_best", "EDP, BasisN / best reprogramming", "pareto_edp"),
    (axes[1], "cycles_vs_best", "cycles, BasisN / best reprogramming", "pareto_cycles"),
):
    for row in table.itertuples():
        full = row.schedule == "full"
        ax.scatter(
            getattr(row, cost),
            row.accuracy_loss_pp,
            marker=markers[row.option],
            s=36 if full else 26,
            facecolors=palette[row.groups] if full else "none",
            edgecolors=palette[row.groups],
            linewidths=1.1,
            zorder=3,
        )
    frontier = table[table[front]].sort_values(cost)
    ax.step(frontier[cost], frontier["accuracy_loss_pp"], where="post", color="0.55", lw=1, zorder=2)
    ax.scatter(frontier[cost], frontier["accuracy_loss_pp"], s=110, facecolors="none", edgecolors="0.55", zorder=2)
    ax.axvline(COST_LINE, color="0.3", ls="--", lw=0.9)
    ax.axhline(ACCURACY_LINE_PP, color="0.3", ls="--", lw=0.9)
    ax.set_xscale("log")
    ax.set_xlabel(label)
    low = min(table[cost].min(), COST_LINE) / 1.5
    ax.set_xlim(low, max(table[cost].max(), COST_LINE) * 1.5)
axes[0].set_ylabel("accuracy loss vs dense (pp)")
handles = [plt.Line2D([], [], ls="", marker="o", color=color, label=f"G = {g}") for g, color in palette.items()] + [
    plt.Line2D([], [], ls="", marker=m, color="0.3", mfc="none", label=name) for name, m in markers.items()
]
handles += [
    plt.Line2D([], [], ls="", marker="o", color="0.3", label="full fine-tune"),
    plt.Line2D([], [], ls="", marker="o", color="0.3", mfc="none", label="short fine-tune"),
    plt.Line2D([], [], ls="-", marker="o", color="0.55", mfc="none", ms=9, label="Pareto front"),
]
axes[1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
fig.suptitle(f"{point['network']}, N = {point['crossbars']}, preset {point['preset']}", y=1.02)
show(save_figure(fig, out_dir, "headline_tradeoff"))
plt.close(fig)

# %% [markdown]
# ## The answer (computed)


# %%
def describe(row) -> str:
    return (
        f"G = {row.groups}, {row.coef_bits}-bit coefficients, option `{row.option}` ({row.schedule} fine-tune): "
        f"accuracy {100 * row.accuracy:.2f}% ({-row.accuracy_loss_pp:+.2f} pp vs dense), EDP "
        f"{100 * row.edp_vs_best:.3g}% and cycles {100 * row.cycles_vs_best:.3g}% of the best reprogramming schedule"
    )


where = f"at {point['network']}, N = {point['crossbars']}, preset `{point['preset']}`"
both = table[table["meets_both"]]
lines = []
if len(both):
    chosen = both.sort_values(["schedule", "edp_vs_best"], ascending=[True, True]).iloc[0]  # "full" < "short"
    lines.append(f"**Meets both** {where}: {describe(chosen)}.")
else:
    # the configuration that misses least: the smaller of its two shortfalls, each as a factor over its line
    miss = table.assign(
        cost_factor=table[["edp_vs_best", "cycles_vs_best"]].max(axis=1) / COST_LINE,
        accuracy_excess_pp=(table["accuracy_loss_pp"] - ACCURACY_LINE_PP).clip(lower=0),
    )
    accurate = miss[miss["meets_accuracy"]]
    lines.append(f"**No configuration meets both** {where}.")
    if len(accurate):
        closest = accurate.sort_values("cost_factor").iloc[0]
        lines.append(
            f"Of those within {ACCURACY_LINE_PP:g} pp of dense, the cheapest is {describe(closest)}: its larger cost "
            f"ratio is {closest.cost_factor:.3g}x the 1% line."
        )
    cheap = miss[miss["meets_edp"] & miss["meets_cycles"]]
    if len(cheap):
        closest = cheap.sort_values("accuracy_loss_pp").iloc[0]
        lines.append(
            f"Of those below 1% in both costs, the most accurate is {describe(closest)}: "
            f"{closest.accuracy_excess_pp:.2f} pp beyond the {ACCURACY_LINE_PP:g} pp line."
        )
    elif not len(accurate):
        lines.append("No configuration meets either line.")
full = table[table["schedule"] == "full"]
for g in sorted(full["groups"].unique()):
    rows = full[full["groups"] == g].set_index("option")
    if best_option in rows.index and "fixed" in rows.index and best_option != "fixed":
        ours, ref = rows.loc[best_option], rows.loc["fixed"]
        lines.append(
            f"Full fine-tune at G = {g}: `{best_option}` {-ours.accuracy_loss_pp:+.2f} pp vs dense, the fixed mask "
            f"{-ref.accuracy_loss_pp:+.2f} pp (same run, same baseline)."
        )
    elif best_option in rows.index:
        loss = rows.loc[best_option].accuracy_loss_pp
        lines.append(f"Full fine-tune at G = {g}: `{best_option}` {-loss:+.2f} pp vs dense.")
count = int(table["meets_both"].sum())
lines.append(f"{count} of {len(table)} trained configurations meet both lines {where}.")
answer = "\n\n".join(lines)
display(Markdown(answer))
