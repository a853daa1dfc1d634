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
# # Where the headline would hold: the claim region, its sensitivity, and the cost model against published numbers
#
# **What the paper claims.** Cycles and EDP per inference below 1% of applying reprogramming, for ResNet and
# DenseNet on ImageNet and CIFAR-100 (arXiv 2407.03738, abstract). Its hardware constants are not available to us.
#
# **What we measure.** From the `claim_region` stage (basisn/hardware/region.py, no training):
# 1. BasisN / the best reprogramming schedule, cycles and EDP, over the time to write and verify one crossbar row
#    (pulse width x verify iterations x passes; swept with one verify iteration's energy per row write, the least
#    favourable reading for BasisN at each write time), the number of crossbars N and the coefficient groups G, at
#    batch 1; the presets hw-eval prices are marked at their own row write time. The 1% line is drawn.
# 2. The smallest row write time from which each network is below 1%, per N and G (table).
# 3. BasisN / the digital lanes (no crossbars), EDP, over N and the batch B, with the line at 1.
# 4. Every numeric hardware constant x0.5 and x2, one at a time, at one point: which assumptions the verdict rests on.
# 5. The cost model's `ideal` mapping and write model against numbers others published (ISAAC, NeuRRAM, PUMA).
#
# **Parameters.** `claim_region_dir` (the stage's output directory), `batch` (B of the maps). Printed below.

# %% tags=["parameters"]
out_dir = "runs/claim_region"  # a run in JupyterLab writes here; the DVC stage passes its own
claim_region_dir = "outputs/claim_region"
batch = 1

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from basisn.figures import FULL_WIDTH, OKABE_ITO, reference_line, save_figure, save_table, set_style, show
from basisn.notebooks import at_repo_root, require
from basisn.summary import digital_region_sentence, region_sentence, seconds_text

at_repo_root()  # JupyterLab starts the kernel in notebooks/; paths are from the repository root
files = {
    name: f"{claim_region_dir}/{name}"
    for name in ("claim_region.json", "region.csv", "smallest_write.csv", "sensitivity.csv", "validation.csv")
}
require(*files.values())
set_style()
facts = json.loads(Path(files["claim_region.json"]).read_text())
print("notebook parameters:", json.dumps({"claim_region_dir": claim_region_dir, "batch": batch}))
print("claim_region.json:", json.dumps({k: facts[k] for k in ("claim_region", "preset", "basis", "presets")}))
region = pd.read_csv(files["region.csv"])
smallest = pd.read_csv(files["smallest_write.csv"])
sensitivity = pd.read_csv(files["sensitivity.csv"])
validation = pd.read_csv(files["validation.csv"])
block = facts["claim_region"]
bound = block["bound"]
networks, groups = block["networks"], block["groups"]
at_batch = region[region["batch"] == batch]


# %% [markdown]
# ## BasisN / the best reprogramming schedule over the row write time and N
#
# Colour: log10 of the ratio; the black line is the paper's 1% (left of it and below: not reached). Markers: the
# presets hw-eval prices, at their own row write time, on every N of `hardware.report_crossbars`.

# %%
PRESET_MARKERS = ["o", "s", "D", "^", "v", "P", "X", "*"]


def region_figure(column: str, title: str, stem: str) -> None:
    fig, axes = plt.subplots(
        len(networks),
        len(groups),
        figsize=(FULL_WIDTH, 1.3 * len(networks) + 1.0),
        sharex=True,
        sharey=True,
        squeeze=False,
        layout="constrained",  # room for the suptitle, the colour bar and the legend below
    )
    levels = np.linspace(-4, 0.5, 19)
    for i, network in enumerate(networks):
        for j, g in enumerate(groups):
            ax = axes[i][j]
            part = at_batch[(at_batch["network"] == network) & (at_batch["groups"] == g)]
            grid = part.pivot_table(index="n_crossbars", columns="row_write_s", values=column)
            x, y = np.meshgrid(grid.columns.to_numpy(), grid.index.to_numpy())
            z = np.log10(grid.to_numpy().clip(1e-6, None))
            filled = ax.contourf(x, y, z, levels=levels, cmap="viridis", extend="both")
            line = ax.contour(x, y, z, levels=[np.log10(bound)], colors="black", linewidths=1.2, linestyles="solid")
            ax.clabel(line, fmt={np.log10(bound): f"{100 * bound:g}%"}, fontsize=6, inline=True)
            for k, (name, preset) in enumerate(facts["presets"].items()):
                ys = facts["report_crossbars"]
                ax.scatter(
                    [preset["row_write_s"]] * len(ys),
                    ys,
                    s=14,
                    marker=PRESET_MARKERS[k % 8],
                    facecolor="white",
                    edgecolor="black",
                    linewidth=0.6,
                    label=name,
                    zorder=3,
                )
            ax.set_xscale("log")
            ax.set_yscale("log", base=2)
            if i == 0:
                ax.set_title(f"G = {g}")
            if j == 0:
                ax.set_ylabel(f"{network}\ncrossbars N")
            if i == len(networks) - 1:
                ax.set_xlabel("row write time (s)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), frameon=False)
    bar = fig.colorbar(filled, ax=axes, shrink=0.6, pad=0.02)
    bar.set_label(f"log10 BasisN / best reprogramming, {title}; black line: {100 * bound:g}%")
    fig.suptitle(
        f"{title}: BasisN / the best reprogramming schedule, batch {batch}, preset `{facts['preset']}`\n"
        f"{len(networks)} networks x {len(groups)} G x {at_batch['row_write_s'].nunique()} write times x "
        f"{at_batch['n_crossbars'].nunique()} N; markers: the presets at their own row write time"
    )
    show(save_figure(fig, out_dir, stem))
    plt.close(fig)


region_figure("cycles_ratio", "cycles", "claim_region_cycles")
region_figure("edp_ratio", "EDP", "claim_region_edp")

# %% [markdown]
# ## The smallest row write time from which each network is below 1% (batch 1)
#
# Empty: not below 1% at any row write time of the grid (up to its longest) at that N.

# %%
rows = (
    smallest[smallest["batch"] == batch]
    .pivot_table(
        index=["network", "groups", "n_crossbars"], columns="metric", values="smallest_row_write_s", dropna=False
    )
    .reset_index()
)
rows = rows.rename(columns={"cycles_ratio": "cycles_below_1pct_from_s", "edp_ratio": "edp_below_1pct_from_s"})
rows.columns.name = None
save_table(rows, out_dir, "claim_region_min_write")
display(rows.head(20))

# %% [markdown]
# ## BasisN / the digital lanes over N and the batch
#
# EDP of BasisN over the dense network on the digital lanes BasisN is given (no crossbars); the black line is 1.
# Neither depends on the write cost.

# %%
cheapest = region[region["row_write_s"] == region["row_write_s"].min()]
fig, axes = plt.subplots(
    len(networks),
    len(groups),
    figsize=(FULL_WIDTH, 1.3 * len(networks) + 0.8),
    sharex=True,
    sharey=True,
    squeeze=False,
    layout="constrained",
)
levels = np.linspace(-1.5, 1.0, 21)
for i, network in enumerate(networks):
    for j, g in enumerate(groups):
        ax = axes[i][j]
        part = cheapest[(cheapest["network"] == network) & (cheapest["groups"] == g)]
        grid = part.pivot_table(index="batch", columns="n_crossbars", values="edp_ratio_digital")
        x, y = np.meshgrid(grid.columns.to_numpy(), grid.index.to_numpy())
        z = np.log10(grid.to_numpy())
        filled = ax.contourf(x, y, z, levels=levels, cmap="coolwarm", extend="both")
        if z.min() < 0 < z.max():
            line = ax.contour(x, y, z, levels=[0.0], colors="black", linewidths=1.2, linestyles="solid")
            ax.clabel(line, fmt={0.0: "break-even"}, fontsize=6, inline=True)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        if i == 0:
            ax.set_title(f"G = {g}")
        if j == 0:
            ax.set_ylabel(f"{network}\nbatch B")
        if i == len(networks) - 1:
            ax.set_xlabel("crossbars N")
bar = fig.colorbar(filled, ax=axes, shrink=0.6, pad=0.02)
bar.set_label("log10 EDP, BasisN / digital lanes (below 0: BasisN better)")
fig.suptitle(
    f"EDP, BasisN / the digital lanes, preset `{facts['preset']}`\n{len(networks)} networks x {len(groups)} G x "
    f"{cheapest['n_crossbars'].nunique()} N x {cheapest['batch'].nunique()} batch sizes"
)
show(save_figure(fig, out_dir, "claim_region_digital"))
plt.close(fig)

# %% [markdown]
# ## Which constants the verdict rests on
#
# Each numeric HardwareConfig field x0.5 and x2 from the preset, one at a time, at the point of
# `claim_region.sensitivity`: the factor by which BasisN / the best reprogramming schedule changes (log scale;
# right: the ratio grows, BasisN's advantage shrinks). Fields a change cannot affect there show no bar; refused
# values are listed below.

# %%
sens = facts["claim_region"]["sensitivity"]
moved = sensitivity.dropna(subset=["cycles_ratio"]).copy()
moved["largest"] = np.log2(moved[["cycles_ratio_change", "edp_ratio_change"]]).abs().max(axis=1)
order = moved.groupby("field")["largest"].max().sort_values(ascending=False).index.tolist()
save_table(sensitivity, out_dir, "sensitivity_tornado")
fig, axes = plt.subplots(1, 2, figsize=(FULL_WIDTH, 0.2 * len(order) + 1.2), sharey=True)
for ax, metric in zip(axes, ("cycles", "edp")):
    for factor, color in zip(sens["factors"], (OKABE_ITO["blue"], OKABE_ITO["orange"])):
        part = moved[moved["factor"] == factor].set_index("field").reindex(order)
        ax.barh(order, np.log2(part[f"{metric}_ratio_change"]), color=color, label=f"x{factor:g}", height=0.7)
    reference_line(ax, 0, "no change", axis="x", ls="-")
    ax.set_xlabel(f"log2 change of {metric.upper() if metric == 'edp' else metric} ratio")
axes[0].invert_yaxis()  # the largest effect on top (the axes share y)
axes[0].legend(frameon=False)
fig.suptitle(
    f"{sens['network']}, N = {sens['crossbars']}, batch {sens['batch']}, preset `{facts['preset']}`: "
    f"base cycles {100 * moved['base_cycles_ratio'].iloc[0]:.3g}%, EDP {100 * moved['base_edp_ratio'].iloc[0]:.3g}%; "
    f"{len(order)} fields x {len(sens['factors'])} factors"
)
fig.tight_layout()
show(save_figure(fig, out_dir, "sensitivity_tornado"))
plt.close(fig)
skipped = sensitivity[sensitivity["cycles_ratio"].isna()]
display(skipped[["field", "factor", "value", "skipped"]])

# %% [markdown]
# ## The cost model against published numbers
#
# Ours / published must stay within the band docs/hardware.md states and justifies (a test checks it).

# %%
save_table(validation, out_dir, "cost_model_validation")
display(validation[["name", "source", "unit", "published", "ours", "ratio", "in_band"]])

# %% [markdown]
# ## What we measured

# %%
write_grid = block["row_write_s"]
top = moved.groupby("field")["largest"].max().sort_values(ascending=False)
lines = [
    f"- Cycles below {100 * bound:g}% of the best reprogramming schedule for all of {', '.join(networks)} "
    f"(batch {batch}), by the row write time it takes: {region_sentence(smallest, 'cycles_ratio', write_grid, batch)}.",
    f"- EDP below {100 * bound:g}%: {region_sentence(smallest, 'edp_ratio', write_grid, batch)}.",
    "- The presets' own row write times: "
    + ", ".join(f"`{name}` {seconds_text(p['row_write_s'])}" for name, p in facts["presets"].items())
    + ".",
    f"- EDP below the digital lanes' for every network (batch {batch}): "
    f"{digital_region_sentence(region, 'edp_ratio_digital', batch)}.",
    f"- The constants that move BasisN / best reprogramming most at {sens['network']}, N = {sens['crossbars']} "
    "(x0.5 or x2): " + ", ".join(f"{field} (up to {2**value:.2f}x)" for field, value in top.head(4).items()) + ".",
    f"- Against published numbers: {int(validation['in_band'].sum())} of {len(validation)} within "
    f"{facts['validation_band'][0]:g}-{facts['validation_band'][1]:g}x; ratios "
    + ", ".join(f"{row.name} {row.ratio:.3g}" for row in validation.itertuples())
    + ".",
]
text = "\n".join(lines)
display(Markdown(text))
