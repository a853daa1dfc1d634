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
# # Sensitivity: basis size, coefficient bits, batch size, verify iterations
#
# **What the paper claims.** A small set of global basis vectors with quantized coefficients keeps accuracy
# (negligible loss) while cycles and EDP drop below 1% of reprogramming (arXiv 2407.03738, abstract). The paper's
# choice of basis size and coefficient bits is not available to us.
#
# **What we measure.**
# 1. From the pipeline's `sweep` stage (same dense baseline, decomposed with every `n_basis` x `coef_bits`, and
#    briefly fine-tuned if `sweep.finetune_epochs` > 0): test accuracy and relative reconstruction error of the
#    weights. Cycles of the pipeline's own model at the same `n_basis` come from the cost model's `n_basis` sweep.
#    In our cost model cycles and energy **do not depend on `coef_bits`** (the digital unit is charged one 8-bit
#    multiply-accumulate per coefficient whatever its width), so a cycles-vs-`coef_bits` curve would be flat.
# 2. From the cost model's one-at-a-time sweeps (`sweep_ratios.csv`): BasisN / reprogram cycles and EDP against
#    `n_basis`, coefficient groups G, batch size, write-and-verify iterations, the write parallelism and the SRAM
#    capacity (with memory traffic on; docs/hardware.md section 2), at one crossbar count.
#
# **Parameters.** `sweep_results`, `sweep_params` (the sweep stage's files), `evaluate_metrics` (dense accuracy for
# reference), `hardware_dir`, `crossbars` (N of the hardware panels; `None`: middle report count), `model_network`
# (the pipeline's model in the cost model's tables). All are printed below.

# %% tags=["parameters"]
out_dir = "runs/sensitivity"  # a run in JupyterLab writes here; the DVC stage passes its own
sweep_results = "outputs/sweep/results.csv"
sweep_params = "outputs/sweep/params.json"
evaluate_metrics = "outputs/evaluate/metrics.json"
hardware_dir = "outputs/hardware"
crossbars = None
model_network = "pipeline_model"

# %%
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display
from matplotlib.lines import Line2D

from basisn.figures import (
    DATASET_DASHES,
    FULL_WIDTH,
    SCHEME_COLORS,
    describe_hw_eval,
    network_style,
    order_networks,
    percent_axis,
    reference_line,
    save_figure,
    save_table,
    set_style,
    show,
)
from basisn.notebooks import at_repo_root, require

at_repo_root()  # JupyterLab starts the kernel in notebooks/; paths are from the repository root
require(
    sweep_results,
    sweep_params,
    evaluate_metrics,
    f"{hardware_dir}/hw_eval.json",
    f"{hardware_dir}/sweep.csv",
    f"{hardware_dir}/sweep_ratios.csv",
)
set_style()
hw_path = Path(hardware_dir)
hw = json.loads((hw_path / "hw_eval.json").read_text())
report = hw["params"]["report_crossbars"]
if crossbars is None:
    crossbars = sorted(report)[len(report) // 2]
mine = dict(
    sweep_results=sweep_results,
    sweep_params=sweep_params,
    evaluate_metrics=evaluate_metrics,
    hardware_dir=hardware_dir,
    crossbars=crossbars,
    model_network=model_network,
)
print("notebook parameters:", json.dumps(mine, indent=1))
print(f"sweep stage parameters ({sweep_params}):")
print(Path(sweep_params).read_text())
metrics = json.loads(Path(evaluate_metrics).read_text())
print(f"evaluate metrics ({evaluate_metrics}):", json.dumps(metrics, sort_keys=True))
print(describe_hw_eval(hw, hw_path / "hw_eval.json"))

results = pd.read_csv(sweep_results)
hw_sweep = pd.read_csv(hw_path / "sweep.csv")
sweep_ratios = pd.read_csv(hw_path / "sweep_ratios.csv")
paper, networks = order_networks(hw, sweep_ratios["network"])
finetuned = "finetuned_accuracy" in results.columns


# %% [markdown]
# ## Accuracy, reconstruction error and cycles vs. n_basis and coef_bits
#
# `basisn_cycles` and `cycles_vs_reprogram` are the cost model's numbers for the pipeline's own model
# (`model_network`) with that many basis vectors, at N = `crossbars`; they are the same for every `coef_bits`.

# %%
own = hw_sweep[
    (hw_sweep["sweep"] == "n_basis")
    & (hw_sweep["network"] == model_network)
    & (hw_sweep["n_crossbars"] == crossbars)
    & (hw_sweep["scheme"] == "basisn")
][["n_basis", "cycles"]]
own_ratio = sweep_ratios[
    (sweep_ratios["sweep"] == "n_basis")
    & (sweep_ratios["network"] == model_network)
    & (sweep_ratios["n_crossbars"] == crossbars)
][["n_basis", "cycles_ratio"]]
own = own.merge(own_ratio, on="n_basis").rename(
    columns={"cycles": "basisn_cycles", "cycles_ratio": "cycles_vs_reprogram"}
)
own["n_basis"] = own["n_basis"].astype("int64")
table = results.merge(own, on="n_basis", how="left").sort_values(["n_basis", "coef_bits"]).reset_index(drop=True)
table.insert(0, "profile", metrics.get("profile"))
table["dense_accuracy"] = metrics["dense_accuracy"]
save_table(table, out_dir, "sensitivity_accuracy")
display(table)

fig, axes = plt.subplots(1, 3, figsize=(FULL_WIDTH, 2.6))
plot = table.assign(bits=table["coef_bits"].astype(str) + "-bit")
hue_order = [f"{b}-bit" for b in sorted(table["coef_bits"].unique())]
sns.lineplot(data=plot, x="n_basis", y="decomposed_accuracy", hue="bits", hue_order=hue_order, marker="o", ax=axes[0])
if finetuned:
    sns.lineplot(
        data=plot,
        x="n_basis",
        y="finetuned_accuracy",
        hue="bits",
        hue_order=hue_order,
        marker="s",
        linestyle="--",
        legend=False,
        ax=axes[0],
    )
reference_line(axes[0], metrics["dense_accuracy"], "dense accuracy", ls=":")
axes[0].set_ylabel("test accuracy")
axes[0].set_title("accuracy", fontsize=8)
sns.lineplot(data=plot, x="n_basis", y="rel_error_mean", hue="bits", hue_order=hue_order, marker="o", ax=axes[1])
sns.lineplot(
    data=plot,
    x="n_basis",
    y="rel_error_weighted",
    hue="bits",
    hue_order=hue_order,
    marker="s",
    linestyle="--",
    legend=False,
    ax=axes[1],
)
axes[1].set_ylabel("relative reconstruction error")
axes[1].set_title("reconstruction error", fontsize=8)
cycles_plot = own.sort_values("n_basis")
axes[2].plot(cycles_plot["n_basis"], cycles_plot["basisn_cycles"], marker="o", color=SCHEME_COLORS["basisn"])
axes[2].set_ylabel("BasisN cycles per inference")
axes[2].set_title(f"{model_network}, N = {crossbars} (any coef_bits)", fontsize=7)
for ax in axes:
    ax.set_xscale("log", base=2)
    ticks = sorted(table["n_basis"].unique())
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("basis vectors n")
# one legend that matches what is drawn: colour = coefficient bits, line style + marker = which curve
palette = dict(zip(hue_order, sns.color_palette(n_colors=len(hue_order))))
for ax in axes[:2]:
    if ax.get_legend():
        ax.get_legend().remove()
entries = [Line2D([], [], color=palette[b], lw=2, label=f"{b} coefficients") for b in hue_order]
entries += [
    Line2D([], [], color="grey", marker="o", ls="-", label="decomposed / mean over layers"),
    Line2D([], [], color="grey", marker="s", ls="--", label="fine-tuned / weighted by weights"),
]
fig.legend(handles=entries, loc="lower center", ncol=min(len(entries), 4), fontsize=6, bbox_to_anchor=(0.5, -0.02))
fig.suptitle(f"sweep stage, profile {metrics.get('profile')}", fontsize=8)
fig.tight_layout(rect=(0, 0.1, 1, 1))
show(save_figure(fig, out_dir, "sensitivity_accuracy"))
plt.close(fig)

# %% [markdown]
# ## Hardware sensitivity: BasisN / the best reprogramming schedule vs. one parameter at a time
#
# Every other parameter at the base point (printed above); one crossbar count N. The labelled line is the paper's
# 1%. The table also holds the ratios to plain reprogramming (`cycles_ratio`, `edp_ratio`).

# %%
LABELS = {
    "n_basis": "basis vectors n",
    "groups": "coefficient groups G",
    "batch": "batch size",
    "verify_iters": "verify iterations",
    "digital_lanes": "digital lanes / crossbar",
    "write_cols": "cells written at once",
    "write_crossbars": "crossbars written at once",
    "verify_iters_share": "N_wv / max (neurram)",
    "sram_bytes": "SRAM MiB (memory traffic on)",
}
SWEEPS = [key for key in LABELS if key in set(sweep_ratios["sweep"])]
rows = []
for key in SWEEPS:
    part = sweep_ratios[(sweep_ratios["sweep"] == key) & (sweep_ratios["n_crossbars"] == crossbars)]
    if key == "verify_iters_share":  # one preset's shares (the first of the presets with a maximum)
        part = part[part["preset"] == part["preset"].iloc[0]]
    for r in part.itertuples():
        value = float(getattr(r, key))
        rows.append(
            {
                "sweep": key,
                "value": int(value) if value.is_integer() and key != "verify_iters_share" else value,
                "network": r.network,
                "n_crossbars": crossbars,
                "cycles_ratio": r.cycles_ratio,
                "edp_ratio": r.edp_ratio,
                "cycles_ratio_best": r.cycles_ratio_best,
                "edp_ratio_best": r.edp_ratio_best,
            }
        )
hardware = pd.DataFrame(rows)
hardware = hardware.assign(order=hardware["network"].map(networks.index), rank=hardware["sweep"].map(SWEEPS.index))
hardware = hardware.sort_values(["rank", "order", "value"]).drop(columns=["order", "rank"]).reset_index(drop=True)
save_table(hardware, out_dir, "sensitivity_hardware")
display(hardware)

# networks: colour and marker = architecture, line style = dataset; three sweeps per row, cycles above EDP
style = network_style(networks, hw)
architectures = list(dict.fromkeys(style["architecture"]))
markers = dict(zip(architectures, ["o", "s", "^", "D", "v", "P", "X"] * 2))
per_row = 3
blocks = math.ceil(len(SWEEPS) / per_row)
fig, axes = plt.subplots(2 * blocks, per_row, figsize=(FULL_WIDTH, 2.9 * blocks + 0.7), sharey="row", squeeze=False)
for j, key in enumerate(SWEEPS):
    part = hardware[hardware["sweep"] == key]
    for i, (column, metric) in enumerate([("cycles_ratio_best", "cycles"), ("edp_ratio_best", "EDP")]):
        ax = axes[2 * (j // per_row) + i, j % per_row]
        for row in style.itertuples():
            line = part[part["network"] == row.network].sort_values("value")
            ax.plot(
                line["value"],
                line[column],
                color=row.color,
                marker=markers[row.architecture],
                markersize=3,
                dashes=DATASET_DASHES[row.dataset] or (None, None),
            )
        ax.set_xscale("log", base=2 if key != "verify_iters" else 10)
        values = sorted(part["value"].unique())
        unit = 2**20 if key == "sram_bytes" else 1  # SRAM capacities shown in MiB
        ax.set_xticks(values, [f"{v / unit:g}" for v in values])
        ax.minorticks_off()
        ax.set_yscale("log")
        reference_line(ax, 0.01, "1%")
        percent_axis(ax)
        ax.set_xlabel(LABELS[key] if i == 1 else "")
        ax.set_ylabel(f"{metric}, BasisN / best" if j % per_row == 0 else "")
for k in range(len(SWEEPS), blocks * per_row):
    axes[2 * (k // per_row), k % per_row].axis("off")
    axes[2 * (k // per_row) + 1, k % per_row].axis("off")
handles = [
    plt.Line2D(
        [],
        [],
        color=row.color,
        marker=markers[row.architecture],
        dashes=DATASET_DASHES[row.dataset] or (None, None),
        label=f"{row.architecture} ({row.dataset})",
    )
    for row in style.itertuples()
]
fig.legend(handles=handles, loc="lower center", ncol=4, bbox_to_anchor=(0.5, 0.0), frameon=False)
fig.suptitle(
    f"BasisN / best reprogramming schedule, one setting changed at a time from the base point\n"
    f"{len(networks)} networks, preset {hw['preset']}, N = {crossbars}"
)
fig.tight_layout(rect=(0, 0.05, 1, 1))
show(save_figure(fig, out_dir, "sensitivity_hardware"))
plt.close(fig)

# %% [markdown]
# ## What we measured

# %%
best = table.loc[table["decomposed_accuracy"].idxmax()]
lines = [
    f"- Pipeline sweep (profile `{metrics.get('profile')}`, dense accuracy {100 * metrics['dense_accuracy']:.2f}%): "
    f"reconstruction error (mean over layers) {table['rel_error_mean'].min():.3f} to "
    f"{table['rel_error_mean'].max():.3f}; "
    f"best decomposed accuracy {100 * best['decomposed_accuracy']:.2f}% at n = {int(best['n_basis'])}, "
    f"{int(best['coef_bits'])}-bit coefficients."
]
if finetuned:
    top = table.loc[table["finetuned_accuracy"].idxmax()]
    lines.append(
        f"- After the sweep's short fine-tune: best {100 * top['finetuned_accuracy']:.2f}% at n = "
        f"{int(top['n_basis'])}, {int(top['coef_bits'])}-bit."
    )
paper_hw = hardware[hardware["network"].isin(paper)]
for key in SWEEPS:
    part = paper_hw[paper_hw["sweep"] == key]
    if part.empty:
        continue
    low, high = part["value"].min(), part["value"].max()
    at_low = part[part["value"] == low]["cycles_ratio_best"]
    at_high = part[part["value"] == high]["cycles_ratio_best"]
    lines.append(
        f"- {LABELS[key]} {low} → {high} (N = {crossbars}, paper networks): cycles, BasisN / best reprogramming "
        f"{100 * at_low.min():.3g}-{100 * at_low.max():.3g}% → {100 * at_high.min():.3g}-{100 * at_high.max():.3g}%."
    )
text = "\n".join(lines)
display(Markdown(text))
