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
out_dir = "paper_figures"
robustness_dir = "outputs/robustness"
cost_sweep = "verify_iters"

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from basisn.figures import SCHEME_COLORS, save_figure, save_table, set_style, show
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
MAPPING_COLOR = {"dense": SCHEME_COLORS["reprogram"], "basisn": SCHEME_COLORS["basisn"]}
SWEEP_AXIS = {
    "variation": ("spread of one write, sigma_write (x (G_on - G_off)), unverified", "linear"),
    "adc_bits": ("ADC bits (exact devices)", "linear"),
    "verify_iters": ("write-verify iterations N_wv", "log"),
}
mappings = [m for m in ("dense", "basisn") if m in set(summary["mapping"])]
sweeps = list(dict.fromkeys(summary["sweep"]))

# %% [markdown]
# ## Accuracy against each non-ideality
#
# One panel per sweep; points are the mean over seeds, whiskers one standard deviation (zero where the run has no
# randomness: exact devices and no read noise). Dashed lines: each model's digital accuracy on the same images.

# %%
fig, axes = plt.subplots(1, len(sweeps), figsize=(4.2 * len(sweeps), 3.4), squeeze=False)
for ax, sweep in zip(axes[0], sweeps):
    part = summary[summary["sweep"] == sweep]
    for mapping in mappings:
        line = part[part["mapping"] == mapping].sort_values("value")
        ax.errorbar(
            line["value"],
            100 * line["accuracy_mean"],
            yerr=100 * line["accuracy_std"],
            marker="o",
            capsize=3,
            color=MAPPING_COLOR[mapping],
            label=MAPPING_LABEL[mapping],
        )
        ax.axhline(100 * facts["digital_accuracy"][mapping], ls="--", lw=1, color=MAPPING_COLOR[mapping])
    label, scale = SWEEP_AXIS.get(sweep, (sweep, "linear"))
    if scale == "log":
        ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(sweep)
axes[0][0].legend(loc="lower left", fontsize=8)
fig.tight_layout()
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
# because the basis is written once: its one-time write is in the table) against test accuracy. Labels: N_wv.

# %%
part = summary[summary["sweep"] == cost_sweep].copy()
if part.empty or "cycles" not in part:
    raise ValueError(f"no rows of sweep {cost_sweep!r} with cost-model columns in {source / 'summary.csv'}")
fig, ax = plt.subplots(figsize=(6.0, 3.8))
for mapping in mappings:
    line = part[part["mapping"] == mapping].sort_values("verify_iters")
    ax.errorbar(
        line["cycles"],
        100 * line["accuracy_mean"],
        yerr=100 * line["accuracy_std"],
        marker="o",
        capsize=3,
        ls="-" if mapping == "dense" else "none",
        color=MAPPING_COLOR[mapping],
        label=MAPPING_LABEL[mapping],
    )
    for _, row in line.iterrows():
        ax.annotate(
            f"{int(row['verify_iters'])}",
            (row["cycles"], 100 * row["accuracy_mean"]),
            textcoords="offset points",
            xytext=(5, -10 if mapping == "dense" else 4),
            fontsize=7,
            color=MAPPING_COLOR[mapping],
        )
    ax.axhline(100 * facts["digital_accuracy"][mapping], ls="--", lw=1, color=MAPPING_COLOR[mapping])
ax.set_xscale("log")
ax.set_xlabel(f"cycles per inference (N = {facts['cost_model']['crossbars']} crossbars, cost model)")
ax.set_ylabel("test accuracy (%)")
ax.set_title("write-verify iterations: cycles vs. accuracy")
ax.legend(loc="lower right", fontsize=8)
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
