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
# # Robustness: accuracy on simulated analog crossbars, and what write-verify costs
#
# **What the paper claims.** BasisN writes a small global basis to the crossbars once and computes every layer by
# combining the basis' column outputs digitally, so inference needs no reprogramming; cycles and EDP fall below 1%
# of the reprogramming baseline with negligible accuracy loss (arXiv 2407.03738, abstract). The abstract says
# **nothing about analog errors**: conductance variation, write-verify precision, ADC resolution, read noise or
# stuck cells. Everything here is our own measurement, not a reproduction of a reported number.
#
# **What we measure** (stage `basisn robustness`, model in `basisn.hardware.sim`, docs/simulation.md). The dense
# baseline (weights tiled onto R-row crossbars, rewritten round after round) and the fine-tuned BasisN model (the
# basis written once and shared by every layer, so one set of device errors for the whole network) run on the
# same simulated crossbars: differential pairs of bit-sliced cells, programming error that shrinks with
# write-verify iterations, bit-serial inputs and a calibrated ADC per column. Three one-at-a-time sweeps around a
# nominal point: the spread of one write (unverified), the ADC resolution (exact devices), and the write-verify
# iterations N_wv of whatever the mapping programs. Mean and spread (std over seeds; whiskers) of test accuracy
# on a fixed class-balanced test subset. The cost model prices every N_wv: for the reprogramming chip N_wv is
# paid on every round of every inference, for BasisN once, so BasisN can afford many more iterations. That
# trade-off is the last figure.
#
# **Parameters.** `robustness_dir` (the stage's output directory), `cost_sweep` (the sweep whose rows give the
# cost/accuracy picture), `out_dir`. The stage's own parameters are printed below.

# %% tags=["parameters"]
out_dir = "runs/robustness"  # a run in JupyterLab writes here; the DVC stage passes its own
robustness_dir = "outputs/robustness"
cost_sweep = "verify_iters"

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from basisn.figures import (
    COLUMN_WIDTH,
    FULL_WIDTH,
    SCHEME_COLORS,
    reference_line,
    save_figure,
    save_table,
    set_style,
    show,
    spread_labels,
)
from basisn.notebooks import at_repo_root, require

at_repo_root()  # JupyterLab starts the kernel in notebooks/; paths are from the repository root
require(*(f"{robustness_dir}/{name}" for name in ("robustness.json", "summary.csv", "robustness.csv")))
set_style()
source = Path(robustness_dir)
facts = json.loads((source / "robustness.json").read_text())
summary = pd.read_csv(source / "summary.csv")
print("notebook parameters:", json.dumps(dict(robustness_dir=robustness_dir, cost_sweep=cost_sweep, out_dir=out_dir)))
print("stage settings (params.yaml robustness: block with defaults):")
print(json.dumps(facts["settings"], indent=1, sort_keys=True))
print("nominal crossbar model (SimConfig):", json.dumps(facts["nominal_sim"], sort_keys=True))
print("cost model:", json.dumps(facts["cost_model"]), "hardware:", json.dumps(facts["hardware"], sort_keys=True))
print("models:", json.dumps(facts["models"], indent=1, sort_keys=True))
print(
    f"dataset {facts['dataset']}, {facts['test_images']} test images, seeds {facts['settings']['seeds']}, "
    f"{facts['simulations']} simulations in {facts['stage_seconds']:.0f} s ({facts['threads']} thread(s))"
)
print("digital accuracy on the same images:", facts["digital_accuracy"])

MAPPING_LABEL = {"dense": "dense weights, reprogrammed", "basisn": "BasisN, basis written once"}
ONE_TIME_LABEL = "BasisN, first inference incl. the one-time basis write"
MAPPING_COLOR = {"dense": SCHEME_COLORS["reprogram"], "basisn": SCHEME_COLORS["basisn"]}
MAPPING_MARKER = {"dense": "o", "basisn": "s"}
MAPPING_SHORT = {"dense": "dense", "basisn": "BasisN"}
SWEEP_TITLE = {
    "variation": "programming variation",
    "adc_bits": "ADC resolution",
    "verify_iters": "write-verify iterations",
}
SWEEP_AXIS = {
    "variation": ("sigma_write, one unverified write (x (G_on - G_off))", "linear"),
    "adc_bits": ("ADC bits (exact devices)", "linear"),
    "verify_iters": ("write-verify iterations N_wv", "log"),
}
mappings = [m for m in ("dense", "basisn") if m in set(summary["mapping"])]
sweeps = list(dict.fromkeys(summary["sweep"]))

# %% [markdown]
# ## Accuracy against each non-ideality
#
# One panel per sweep; points are the mean over the seeds (`seeds` of the stage settings) on the stage's fixed test
# subset, bars one standard deviation over those seeds (none where the run has no randomness: exact devices and no
# read noise). Dashed lines: each model's digital accuracy on the same images. The caption above the panels repeats
# the number of images and the seeds; the legend sits below the panels so that it hides no point.

# %%
fig, axes = plt.subplots(1, len(sweeps), figsize=(FULL_WIDTH, 2.7), squeeze=False, sharey=True)
for ax, sweep in zip(axes[0], sweeps):
    part = summary[summary["sweep"] == sweep]
    for mapping in mappings:
        line = part[part["mapping"] == mapping].sort_values("value")
        mean, sd = 100 * line["accuracy_mean"], 100 * line["accuracy_std"].fillna(0)
        ax.errorbar(
            line["value"],
            mean,
            yerr=[sd.clip(upper=mean), sd.clip(upper=100 - mean)],  # +-1 sd, cut at 0% and 100%
            marker=MAPPING_MARKER[mapping],
            capsize=2,
            color=MAPPING_COLOR[mapping],
            label=MAPPING_LABEL[mapping],
        )
        reference_line(
            ax,
            100 * facts["digital_accuracy"][mapping],
            f"digital, {MAPPING_SHORT[mapping]}",
            color=MAPPING_COLOR[mapping],
            at="end" if mapping == "dense" else "start",
        )
    label, scale = SWEEP_AXIS.get(sweep, (sweep, "linear"))
    if scale == "log":
        ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_title(SWEEP_TITLE.get(sweep, sweep))
    ax.set_ylim(0, 102)
axes[0][0].set_ylabel("test accuracy (%)")
handles, labels = axes[0][0].get_legend_handles_labels()
fig.legend(handles, labels, loc="lower center", ncol=len(labels), bbox_to_anchor=(0.5, 0.0), frameon=False)
fig.suptitle(
    f"n = {facts['test_images']} test images x {len(facts['settings']['seeds'])} seeds "
    f"({', '.join(map(str, facts['settings']['seeds']))})\npoints: mean over seeds; bars: \u00b11 sd over seeds "
    "(cut at 0% and 100%; none where the run is deterministic)"
)
fig.tight_layout(rect=(0, 0.08, 1, 1))  # room for the legend below the panels, where it hides no point
show(save_figure(fig, out_dir, "robustness_sweeps"))
plt.close(fig)

table = summary[
    [
        "sweep",
        "mapping",
        "value",
        "accuracy_mean",
        "accuracy_std",
        "seeds",
        "accuracy_drop_pp",
        "effective_sigma",
        "verify_iters",
        "logit_rel_error_mean",
    ]
].copy()
save_table(table, out_dir, "robustness_summary")
display(Markdown(table.to_markdown(index=False, floatfmt=".4g")))

# %% [markdown]
# ## Cost and accuracy of write-verify
#
# Rows of the `cost_sweep` sweep: cycles per inference from the cost model (`reprogram` scheme for the dense
# weights, whose N_wv is paid on every round; `basisn` scheme, whose per-inference cycles do not depend on N_wv
# because the basis is written once) against test accuracy. Hollow circles (dotted from the filled ones): BasisN's
# first inference including the one-time write of the basis (`program_once_cycles`), which every later inference
# is spared. Labels: N_wv (alternating sides where points are close).

# %%
part = summary[summary["sweep"] == cost_sweep].copy()
if part.empty or "cycles" not in part:
    raise ValueError(f"no rows of sweep {cost_sweep!r} with cost-model columns in {source / 'summary.csv'}")
fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 3.4))
ax.set_xscale("log")
for mapping in mappings:
    line = part[part["mapping"] == mapping].sort_values("verify_iters").reset_index(drop=True)
    mean, sd = 100 * line["accuracy_mean"], 100 * line["accuracy_std"].fillna(0)
    ax.errorbar(
        line["cycles"],
        mean,
        yerr=[sd.clip(upper=mean), sd.clip(upper=100 - mean)],
        marker=MAPPING_MARKER[mapping],
        capsize=2,
        ls="-" if mapping == "dense" else "none",
        color=MAPPING_COLOR[mapping],
        label=MAPPING_LABEL[mapping],
    )
    # N_wv beside each point: the labels of one mapping are moved apart vertically (basisn.figures.spread_labels),
    # so points at the same cycles (BasisN's, whose cycles do not depend on N_wv) or close accuracy never overprint;
    # dense labels go right of their points, BasisN's left (its one-time-write markers are on the right)
    side = -1 if mapping == "basisn" else 1
    for row, y in zip(line.itertuples(), spread_labels(mean, gap=6.0)):
        ax.annotate(
            f"{int(row.verify_iters)}",
            (row.cycles, 100 * row.accuracy_mean),
            xytext=(row.cycles * (0.82 if side < 0 else 1.2), y),
            textcoords="data",
            ha="right" if side < 0 else "left",
            va="center",
            fontsize=6,
            color=MAPPING_COLOR[mapping],
            arrowprops={"arrowstyle": "-", "lw": 0.4, "color": MAPPING_COLOR[mapping], "shrinkA": 0, "shrinkB": 2},
        )
    if mapping == "basisn" and (line["program_once_cycles"] > 0).any():
        # the basis' one-time write, charged to the first inference: where BasisN would sit without amortising it
        first = line["cycles"] + line["program_once_cycles"]
        ax.scatter(first, mean, marker="s", facecolors="none", edgecolors=MAPPING_COLOR[mapping], zorder=3)
        for x0, x1, y in zip(line["cycles"], first, mean):
            ax.plot([x0, x1], [y, y], ls=":", lw=0.8, color=MAPPING_COLOR[mapping])
        ax.scatter([], [], marker="s", facecolors="none", edgecolors=MAPPING_COLOR[mapping], label=ONE_TIME_LABEL)
    reference_line(
        ax,
        100 * facts["digital_accuracy"][mapping],
        f"digital, {MAPPING_SHORT[mapping]}",
        color=MAPPING_COLOR[mapping],
        at="end" if mapping == "dense" else "start",
    )
low, high = part["cycles"].min(), (part["cycles"] + part.get("program_once_cycles", 0)).max()
ax.set_xlim(low / 2.2, high * 2.2)  # room for the labels on both sides
ax.set_ylim(0, 104)
ax.set_xlabel(f"cycles per inference (N = {facts['cost_model']['crossbars']} crossbars, cost model)")
ax.set_ylabel("test accuracy (%)")
ax.set_title(
    f"write-verify iterations N_wv (labels): cycles vs accuracy\nn = {facts['test_images']} test images x "
    f"{len(facts['settings']['seeds'])} seeds, bars \u00b11 sd"
)
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False)
fig.tight_layout()
show(save_figure(fig, out_dir, "robustness_cost_accuracy"))
plt.close(fig)

cost = part[
    [
        "mapping",
        "verify_iters",
        "effective_sigma",
        "cycles",
        "energy_j",
        "program_once_cycles",
        "accuracy_mean",
        "accuracy_std",
        "seeds",
    ]
].reset_index(drop=True)
save_table(cost, out_dir, "robustness_cost_accuracy")
display(Markdown(cost.to_markdown(index=False, floatfmt=".4g")))

# %% [markdown]
# ## What we measured
#
# Computed from the tables above: the largest accuracy loss of each mapping against its digital accuracy in each
# sweep, and along `cost_sweep` the fewest verify iterations with which each mapping comes within `within_pp` of
# its digital accuracy, with the cycles per inference that costs.

# %%
within_pp = 2.0
lines = []
for sweep in sweeps:
    part_s = summary[summary["sweep"] == sweep]
    worst = part_s.loc[part_s.groupby("mapping")["accuracy_drop_pp"].idxmax()]
    lines.append(
        f"- `{sweep}`: largest loss against digital "
        + "; ".join(
            f"{MAPPING_LABEL[r.mapping]} {r.accuracy_drop_pp:.1f} pp at {r.value:g}"
            for r in worst.set_index("mapping").loc[mappings].reset_index().itertuples()
        )
        + "."
    )
for mapping in mappings:
    line = part[part["mapping"] == mapping].sort_values("verify_iters")
    good = line[line["accuracy_drop_pp"] <= within_pp]
    best = line.loc[line["accuracy_mean"].idxmax()]
    if good.empty:
        lines.append(
            f"- {MAPPING_LABEL[mapping]}: no N_wv of `{cost_sweep}` comes within {within_pp:g} pp of digital "
            f"(best {100 * best['accuracy_mean']:.1f}% at N_wv = {int(best['verify_iters'])})."
        )
    else:
        first_good = good.iloc[0]
        lines.append(
            f"- {MAPPING_LABEL[mapping]}: within {within_pp:g} pp of digital from "
            f"N_wv = {int(first_good['verify_iters'])}, "
            f"at {first_good['cycles']:.4g} cycles per inference"
            + (f" (+{first_good['program_once_cycles']:.4g} once)" if first_good["program_once_cycles"] > 0 else "")
            + "."
        )
lines.append(
    "- The abstract makes no claim about analog errors; these are our measurements on the stage's test subset "
    f"({facts['test_images']} images), not a reproduction."
)
text = "\n".join(lines)
display(Markdown(text))
