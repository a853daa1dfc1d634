# ---
# jupyter:
#   jupytext:
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version,-jupytext.text_representation.format_version
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
# configurations: the `finetune:` schedule on every train image, repeated at `tradeoff.seeds` seeds, each with its
# own dense baseline, data order, decomposition and fine-tune). One point per trained configuration; the
# cost axis is BasisN / the best reprogramming schedule (`reprogram_best`, the fair baseline) at the headline
# point of `tradeoff.headline` (network, crossbar count N, preset). The table also holds BasisN / plain
# `reprogram` and / `ideal`, and the worst ratio over every priced network, N and preset.
#
# **Seeds.** A full fine-tune's accuracy and loss are the mean over its seeds, with the standard deviation
# (ddof = 1) as the spread (error bars: +- 1 standard deviation); its loss is paired with the dense baseline of
# the same seed. A target or the 1 pp bound is **met** when the loss plus its spread is at most the bound,
# **missed** when the loss minus its spread is above it, and **within noise** otherwise; an option beats the
# fixed mask only where the mean of their per-seed difference exceeds its standard deviation
# (`basisn.summary.bound_verdict`, `paired_verdict`). The short grid runs at one seed and is judged on its value.
#
# **Parameters.** `tradeoff_dir`: the stage's output directory (results.csv, dense.csv, costs.csv, params.json).

# %% tags=["parameters"]
out_dir = "runs/tradeoff"  # a run in JupyterLab writes here; the DVC stage passes its own
tradeoff_dir = "outputs/tradeoff"
targets_pp = {4: 0.5, 8: 1.0}  # G -> the largest accuracy loss (pp vs dense) we aim at with a full fine-tune

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from basisn.data import DATASET_NAMES
from basisn.figures import FULL_WIDTH, PALETTE, percent_axis, reference_line, save_figure, save_table, set_style, show
from basisn.hardware.networks import NETWORKS
from basisn.notebooks import at_repo_root, require
from basisn.summary import (
    ACCURACY_BOUND_PP,
    BELOW_BOUND,
    TRADEOFF_COSTS,
    bound_verdict,
    loss_text,
    tradeoff_answer,
    tradeoff_table,
)

at_repo_root()  # JupyterLab starts the kernel in notebooks/; paths are from the repository root
require(*(f"{tradeoff_dir}/{name}" for name in ("results.csv", "dense.csv", "costs.csv", "params.json")))
set_style()
print("notebook parameters:", json.dumps({"tradeoff_dir": tradeoff_dir, "targets_pp": targets_pp}))
path = Path(tradeoff_dir)
stage = json.loads((path / "params.json").read_text())
print(json.dumps({k: stage[k] for k in ("tradeoff", "decompose", "finetune", "hardware")}, indent=1, sort_keys=True))
results = pd.read_csv(path / "results.csv")
dense = pd.read_csv(path / "dense.csv")
costs = pd.read_csv(path / "costs.csv")
point = stage["tradeoff"]["headline"]
best_option = stage["tradeoff"]["best"]

# %% [markdown]
# ## Table: one row per trained configuration, accuracy and cost side by side
#
# `meets_accuracy`: at most 1 pp below dense; `meets_cycles` / `meets_edp`: below 1% of the best reprogramming
# schedule at the headline point; `worst_*`: the largest ratio over every priced network, N and preset;
# `pareto_*`: no other configuration is at least as good in accuracy loss and that cost, and better in one.
# The rules live in `basisn/summary.py` (`tradeoff_table`), shared with CLAIMS.md and `basisn summary`.

# %%
table = tradeoff_table(results, costs, point)
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
    "seeds",
    "accuracy",
    "accuracy_sd",
    "accuracy_min",
    "accuracy_max",
    "dense_accuracy",
    "dense_accuracy_sd",
    "accuracy_loss_pp",
    "accuracy_loss_pp_sd",
    "accuracy_verdict",
    "vs_fixed_pp",
    "vs_fixed_sd",
    "vs_fixed",
    *TRADEOFF_COSTS.values(),
    "worst_cycles_vs_best",
    "worst_edp_vs_best",
    "meets_accuracy",
    "meets_cycles",
    "meets_edp",
    "meets_both",
    "pareto_edp",
    "pareto_cycles",
]
table = table[columns]
save_table(table, out_dir, "headline_tradeoff")
display(table)

# %% [markdown]
# ## The dense baselines, one per seed
#
# Seed `seed` (params.yaml) is the train stage's model; each other replicate seed's baseline is trained by the
# tradeoff stage with the same `train:` block. Every full fine-tune of a seed distils from, and is compared with,
# that seed's baseline (the baseline is not shared between seeds).

# %%
save_table(dense, out_dir, "headline_tradeoff_dense")
display(dense)
dense_line = (
    f"Dense baseline: {100 * dense['dense_accuracy'].mean():.2f}% ± {100 * dense['dense_accuracy'].std(ddof=1):.2f}% "
    f"over {len(dense)} seeds ({', '.join(map(str, dense['seed']))}; min {100 * dense['dense_accuracy'].min():.2f}%, "
    f"max {100 * dense['dense_accuracy'].max():.2f}%)."
    if len(dense) > 1
    else f"Dense baseline: {100 * dense['dense_accuracy'].iloc[0]:.2f}% (1 seed)."
)
print(dense_line)

# %% [markdown]
# ## Figure: accuracy loss against EDP and cycles, one point per configuration
#
# Colour: G. Marker: training option. Size: coefficient bits. Filled: full fine-tune (error bars: +- 1 standard
# deviation over its seeds); hollow: the grid's short fine-tune (one seed). The loss axis is linear up to 2 pp and
# logarithmic above (the short fine-tunes of 2-bit coefficients lose tens of pp). Labelled lines: the paper's 1%
# (vertical) and 1 pp of accuracy loss (horizontal). Grey rings and line: the Pareto front over all points (no
# other configuration is at least as good on both axes and better on one). The two axes measure different models:
# accuracy is the pipeline's model on its own dataset, cost prices the headline network of `tradeoff.headline`
# with that configuration's basis.

# %%
palette = dict(zip(sorted(table["groups"].unique()), PALETTE))
marker_cycle = ["s", "^", "D", "v", "P", "X", "*"]  # no circle: hollow and filled circles mean the fine-tune
markers = {name: marker_cycle[i % len(marker_cycle)] for i, name in enumerate(dict.fromkeys(table["option"]))}
bit_values = sorted(table["coef_bits"].unique())
sizes = {b: s for b, s in zip(bit_values, [18, 34, 56, 80, 110])}
fig, axes = plt.subplots(1, 2, figsize=(FULL_WIDTH, 3.1), sharey=True)
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
            s=sizes[row.coef_bits],
            facecolors=palette[row.groups] if full else "none",
            edgecolors=palette[row.groups],
            linewidths=1.0,
            zorder=3,
        )
        if row.seeds > 1:
            ax.errorbar(
                getattr(row, cost),
                row.accuracy_loss_pp,
                yerr=row.accuracy_loss_pp_sd,
                fmt="none",
                ecolor=palette[row.groups],
                elinewidth=0.9,
                capsize=2,
                zorder=3,
            )
    frontier = table[table[front]].sort_values(cost)
    ax.step(frontier[cost], frontier["accuracy_loss_pp"], where="post", color="0.55", lw=1, zorder=2)
    ax.scatter(frontier[cost], frontier["accuracy_loss_pp"], s=120, facecolors="none", edgecolors="0.55", zorder=2)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=2.0, linscale=1.5)  # linear near the 1 pp line, logarithmic above
    ticks = [t for t in (0, 0.5, 1, 2, 5, 10, 20, 50, 100) if t <= max(2.0, table["accuracy_loss_pp"].max()) * 1.2]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel(label)
    low = min(table[cost].min(), BELOW_BOUND) / 1.5
    ax.set_xlim(low, max(table[cost].max(), BELOW_BOUND) * 1.5)
    reference_line(ax, BELOW_BOUND, "1%: the paper's claim", axis="x", color="0.3")
    reference_line(ax, ACCURACY_BOUND_PP, "1 pp loss", color="0.3")
    percent_axis(ax, "x")
axes[0].set_ylabel("accuracy loss vs dense (pp)")
handles = [plt.Line2D([], [], ls="", marker="h", color=color, label=f"G = {g}") for g, color in palette.items()]
handles += [plt.Line2D([], [], ls="", marker=m, color="0.3", mfc="none", label=name) for name, m in markers.items()]
handles += [
    plt.Line2D([], [], ls="", marker="h", color="0.3", ms=(sizes[b] ** 0.5), mfc="none", label=f"{b}-bit coefficients")
    for b in bit_values
]
handles += [
    plt.Line2D([], [], ls="", marker="h", color="0.3", label="full fine-tune (filled)"),
    plt.Line2D([], [], ls="", marker="h", color="0.3", mfc="none", label="short fine-tune (hollow)"),
    plt.Line2D([], [], ls="-", marker="o", color="0.55", mfc="none", ms=8, label="Pareto front"),
]
fig.legend(handles=handles, loc="lower center", ncol=5, bbox_to_anchor=(0.5, 0.0), frameon=False)
network = point["network"]
# params.json names the profile, not its dataset: the profile's data block is the pipeline model's dataset
dataset = DATASET_NAMES.get((stage.get("data") or {}).get("dataset"), f"profile {stage['profile']}'s dataset")
full_seeds = int(table.loc[table["schedule"] == "full", "seeds"].max()) if (table["schedule"] == "full").any() else 0
fig.suptitle(
    f"accuracy: the pipeline's model on {dataset} ({len(table)} configurations; full fine-tunes: mean of "
    f"{full_seeds} seeds)\ncost: {network} ({NETWORKS[network].dataset if network in NETWORKS else 'pipeline model'}) "
    f"with each configuration's basis, N = {point['crossbars']}, preset {point['preset']}"
)
fig.tight_layout(rect=(0, 0.2, 1, 1))
show(save_figure(fig, out_dir, "headline_tradeoff"))
plt.close(fig)

# %% [markdown]
# ## Accuracy targets of the parallelization-aware options (full fine-tune)
#
# For each G of `targets_pp`: every option with a full fine-tune at that G, its loss against dense, the target,
# and by how much it meets (negative) or misses (positive) it; `fixed` is the reference mask of the same run.

# %%
full = table[table["schedule"] == "full"]
targets = []
for groups, target in targets_pp.items():
    for row in full[full["groups"] == int(groups)].itertuples():
        targets.append(
            {
                "groups": row.groups,
                "option": row.option,
                "seeds": row.seeds,
                "accuracy": row.accuracy,
                "accuracy_sd": row.accuracy_sd,
                "accuracy_loss_pp": row.accuracy_loss_pp,
                "accuracy_loss_pp_sd": row.accuracy_loss_pp_sd,
                "target_loss_pp": target,
                "miss_pp": row.accuracy_loss_pp - target,
                "verdict": bound_verdict(row.accuracy_loss_pp, row.accuracy_loss_pp_sd, target),
            }
        )
columns = ["groups", "option", "seeds", "accuracy", "accuracy_sd", "accuracy_loss_pp", "accuracy_loss_pp_sd"]
targets = pd.DataFrame(targets, columns=[*columns, "target_loss_pp", "miss_pp", "verdict"])
save_table(targets, out_dir, "headline_tradeoff_targets")
display(targets)

# %% [markdown]
# ## The answer (computed)

# %%
lines = [dense_line, *tradeoff_answer(table, point, best_option)]
TARGET_TEXT = {
    "met": "meets it, with its spread",
    "missed": "misses it by {miss:.2f} pp, beyond its spread",
    "within noise": "is within noise of it (the target lies inside its spread)",
}
for row in targets.itertuples():
    verdict = TARGET_TEXT[row.verdict].format(miss=row.miss_pp)
    lines.append(
        f"Target at G = {row.groups} (loss at most {row.target_loss_pp:g} pp): `{row.option}` "
        f"{loss_text(row.accuracy_loss_pp, row.accuracy_loss_pp_sd, row.seeds)} vs dense {verdict}."
    )
if targets.empty:
    lines.append("No full fine-tune at the G of the targets: tradeoff.full names none of " + str(list(targets_pp)))
display(Markdown("\n\n".join(lines)))
