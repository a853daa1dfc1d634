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
# # Reprogramming overhead (motivation)
#
# **What the paper claims.** Large DNNs need far more RRAM crossbars than a chip has, so the crossbars must be
# reprogrammed layer after layer during inference; writing RRAM needs write-and-verify, which is much slower and
# costlier than a read, so reprogramming dominates inference time and energy (arXiv 2407.03738, abstract).
#
# **What we measure.** From the cost model's output (`basisn hw-eval`, docs/hardware.md):
# 1. how many crossbars (R x C tiles) one copy of every weight of each network needs, against chips with N
#    crossbars, and how many write rounds reprogramming then needs per batch;
# 2. under the `reprogram` scheme, the share of inference **time** spent writing (from the per-layer table, at the
#    report crossbar counts) and the share of **energy** spent writing (at every crossbar count).
#
# **Parameters.** `hardware_dir` is the `hw-eval` output directory; the hardware description, the batch size and
# the crossbar counts it used are printed below from its `hw_eval.json`. Every number in the text is computed here.

# %% tags=["parameters"]
out_dir = "runs/overhead"  # a run in JupyterLab writes here; the DVC stage passes its own
hardware_dir = "outputs/hardware"

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from basisn.figures import (
    COLUMN_WIDTH,
    DATASET_DASHES,
    FULL_WIDTH,
    SCHEME_COLORS,
    load_hw_eval,
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
require(*(f"{hardware_dir}/{name}" for name in ("hw_eval.json", "summary.csv", "layers.csv", "sweep.csv")))
set_style()
print("notebook parameters:", json.dumps({"hardware_dir": hardware_dir}))
hw_path = Path(hardware_dir)
hw = load_hw_eval(hw_path)

summary = pd.read_csv(hw_path / "summary.csv")
layers = pd.read_csv(hw_path / "layers.csv")
summary = summary[summary["preset"] == hw["preset"]]
paper, networks = order_networks(hw, summary["network"])  # the pipeline's own model last
crossbars = sorted(summary["n_crossbars"].unique())
report = sorted(set(hw["params"]["report_crossbars"]) & set(layers["n_crossbars"]))


# %% [markdown]
# ## Crossbars needed vs. crossbars on the chip
#
# `crossbars_needed` is the number of dense tiles (Σ t_l, one copy of every weight); `rounds_N<n>` is the number
# of write rounds the `reprogram` scheme needs for one batch on a chip with n crossbars (1 where everything fits
# and is written once).

# %%
rows = []
for name in networks:
    info = hw["networks"][name]
    reprogram = summary[(summary["network"] == name) & (summary["scheme"] == "reprogram")].set_index("n_crossbars")
    row = {
        "network": name,
        "input_size": "x".join(map(str, info["input_size"])),
        "layers": info["layers"],
        "weights": info["weights"],
        "macs": info["macs"],
        "crossbars_needed": info["tiles_total"],
    }
    for n in crossbars:
        row[f"rounds_N{n}"] = int(reprogram.loc[n, "rounds_total"])
    rows.append(row)
needed = pd.DataFrame(rows)
save_table(needed, out_dir, "overhead_crossbars")
display(needed)

fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.8))
sns.barplot(data=needed, x="network", y="crossbars_needed", color=SCHEME_COLORS["ideal"], alpha=0.8, ax=ax)
ax.set_yscale("log")
for n in report:
    reference_line(ax, n, f"a chip with N = {n}", color="0.35")
ax.set_xlabel("")
ax.set_ylabel("crossbars for one copy of all weights")
ax.set_title(
    f"{len(networks)} networks; {hw['config']['rows']}x{hw['config']['cols']} crossbars, "
    f"{hw['config']['weight_bits']}-bit weights"
)
ax.tick_params(axis="x", rotation=35)
for label in ax.get_xticklabels():
    label.set_horizontalalignment("right")
show(save_figure(fig, out_dir, "overhead_crossbars"))
plt.close(fig)

# %% [markdown]
# ## Share of inference spent writing under reprogramming
#
# Time share: cycles of the write rounds over all cycles, from the per-layer table `layers.csv` (written at the
# report crossbar counts only). Energy share: write energy over total energy (`summary.csv`); every cell is
# rewritten once per batch whatever N is, so it does not depend on N, only on the batch size (right panel, from the
# batch sweep `sweep.csv`). `reprogram_over_ideal` is the reprogramming scheme's cycles over those of the ideal
# mapping (every weight on chip, written once).

# %%
rep_layers = layers[layers["scheme"] == "reprogram"]
time_share = rep_layers.groupby(["network", "n_crossbars"])[["program_cycles", "cycles"]].sum().reset_index()
time_share["write_time_share"] = time_share["program_cycles"] / time_share["cycles"]
cycles = summary.pivot_table(index=["network", "n_crossbars"], columns="scheme", values="cycles").reset_index()
rep = summary[(summary["scheme"] == "reprogram") & summary["n_crossbars"].isin(report)]
share = (
    rep[["network", "n_crossbars", "fits", "energy_write_j", "energy_j"]]
    .merge(cycles[["network", "n_crossbars", "ideal", "reprogram"]], on=["network", "n_crossbars"])
    .merge(time_share[["network", "n_crossbars", "write_time_share"]], on=["network", "n_crossbars"])
    .assign(
        write_energy_share=lambda d: d["energy_write_j"] / d["energy_j"],
        reprogram_over_ideal=lambda d: d["reprogram"] / d["ideal"],
        order=lambda d: d["network"].map(networks.index),
    )
    .sort_values(["order", "n_crossbars"])
)
share = share[["network", "n_crossbars", "fits", "write_time_share", "write_energy_share", "reprogram_over_ideal"]]
share = share.reset_index(drop=True)
save_table(share, out_dir, "overhead_write_share")
display(share)

sweep = pd.read_csv(hw_path / "sweep.csv")
by_batch = sweep[(sweep["sweep"] == "batch") & (sweep["scheme"] == "reprogram")]
by_batch = by_batch[by_batch["n_crossbars"] == by_batch["n_crossbars"].min()]  # the write share is the same at any N
by_batch = by_batch.assign(write_energy_share=by_batch["energy_write_j"] / by_batch["energy_j"])
print("write energy share vs batch (reprogram, any N):")
display(by_batch.pivot_table(index="network", columns="batch", values="write_energy_share").loc[networks])

fig, axes = plt.subplots(1, 2, figsize=(FULL_WIDTH, 2.9))
bars = share.assign(N="N = " + share["n_crossbars"].astype(str))
sns.barplot(
    data=bars,
    x="network",
    y="write_time_share",
    hue="N",
    order=networks,
    palette=sns.color_palette("crest", len(report)),
    ax=axes[0],
)
axes[0].set_ylim(0, 1)
percent_axis(axes[0])
axes[0].set_xlabel("")
axes[0].set_ylabel("inference time spent writing")
axes[0].set_title(f"time, batch {hw['params']['batch']}, N = {', '.join(map(str, report))}")
axes[0].tick_params(axis="x", rotation=35)
for label in axes[0].get_xticklabels():
    label.set_horizontalalignment("right")
axes[0].legend(title="", frameon=False)
# networks: colour and marker = architecture, line style = dataset, each drawn with its own dash pattern
style = network_style(networks, hw)
markers = dict(zip(dict.fromkeys(style["architecture"]), ["o", "s", "^", "D", "v", "P", "X"] * 2))
for row in style.itertuples():
    line = by_batch[by_batch["network"] == row.network].sort_values("batch")
    axes[1].plot(
        line["batch"],
        line["write_energy_share"],
        color=row.color,
        marker=markers[row.architecture],
        dashes=DATASET_DASHES[row.dataset] or (None, None),
        label=f"{row.architecture} ({row.dataset})",
    )
batches = sorted(by_batch["batch"].unique())
axes[1].set_xscale("log", base=2)
axes[1].set_xticks(batches, [str(b) for b in batches])
axes[1].minorticks_off()
axes[1].set_ylim(0, 1)
percent_axis(axes[1])
axes[1].set_xlabel("batch size")
axes[1].set_ylabel("inference energy spent writing")
axes[1].set_title("energy, the same at every N")
axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)  # outside: it covers no line
row_write = hw["derived"]["row_program_cycles"]
fig.suptitle(f"plain reprogramming, {len(networks)} networks, preset {hw['preset']}: {row_write} cycles per row write")
fig.tight_layout()
show(save_figure(fig, out_dir, "overhead_write_share"))
plt.close(fig)

# %% [markdown]
# ## What we measured

# %%
paper_needed = needed[needed["network"].isin(paper)]
at_report = share[share["n_crossbars"].isin(report) & share["network"].isin(paper)]
lines = [
    f"- One copy of every weight of the paper's networks needs {paper_needed['crossbars_needed'].min():,} to "
    f"{paper_needed['crossbars_needed'].max():,} crossbars; at N = {report[0]} reprogramming needs "
    f"{int(paper_needed[f'rounds_N{report[0]}'].min())} to {int(paper_needed[f'rounds_N{report[0]}'].max())} "
    "write rounds per batch.",
]
for n in report:
    part = at_report[at_report["n_crossbars"] == n]
    lines.append(
        f"- N = {n}: writing takes {100 * part['write_time_share'].min():.0f}% to "
        f"{100 * part['write_time_share'].max():.0f}% of the inference time and "
        f"{100 * part['write_energy_share'].min():.0f}% to {100 * part['write_energy_share'].max():.0f}% of its "
        f"energy (batch {hw['params']['batch']}); reprogramming is {part['reprogram_over_ideal'].min():.2f}x to "
        f"{part['reprogram_over_ideal'].max():.2f}x slower than the ideal mapping."
    )
text = "\n".join(lines)
display(Markdown(text))
