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
# # Cycles per inference vs. number of crossbars
#
# **What the paper claims.** BasisN needs no reprogramming on any number of crossbars, and its cycles per
# inference are below 1% of the reprogramming baseline's for ResNet and DenseNet on ImageNet and CIFAR-100
# (arXiv 2407.03738, abstract).
#
# **What we measure.** Cycles per inference from the cost model (`basisn hw-eval`, docs/hardware.md section 2) for
# each network and chip size N: `ideal` (every weight on its own crossbar, written once; does not depend on N),
# `reprogram` (N crossbars rewritten round after round with write-and-verify, per batch), `reprogram_best` (the
# baseline at its best: the fastest of plain and ping-pong rounds, each also with its layers pipelined, rounds of
# whole layers with copies on the round's idle crossbars, and replicas once every weight fits), `basisn` (the basis
# written once on N crossbars, never rewritten), `digital` (BasisN's digital MAC lanes running the dense network
# without crossbars) and `floor(N)`, the fewest cycles any weight-stationary mapping of the dense weights could
# reach on N crossbars with free writes.
# Dotted lines: `reprogram` under the comparison presets (other write costs), where `hw-eval` evaluated them.
#
# **Parameters.** `hardware_dir` (the `hw-eval` output directory); its hardware description, basis and batch size
# are printed below from `hw_eval.json`.

# %% tags=["parameters"]
out_dir = "runs/cycles"  # a run in JupyterLab writes here; the DVC stage passes its own
hardware_dir = "outputs/hardware"

# %%
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display
from matplotlib.ticker import FuncFormatter

from basisn.figures import (
    FULL_WIDTH,
    SCHEME_COLORS,
    SCHEME_LABELS,
    SCHEME_LINESTYLES,
    SCHEME_MARKERS,
    load_hw_eval,
    order_networks,
    save_figure,
    save_table,
    set_style,
    show,
)
from basisn.notebooks import at_repo_root, require

at_repo_root()  # JupyterLab starts the kernel in notebooks/; paths are from the repository root
require(*(f"{hardware_dir}/{name}" for name in ("hw_eval.json", "summary.csv")))
set_style()
print("notebook parameters:", json.dumps({"hardware_dir": hardware_dir}))
hw_path = Path(hardware_dir)
hw = load_hw_eval(hw_path)

summary = pd.read_csv(hw_path / "summary.csv")
paper, networks = order_networks(hw, summary["network"])
others = [p for p in hw["params"]["compare_presets"] if p in set(summary["preset"])]


# %% [markdown]
# ## Table: cycles per inference (main preset) and BasisN's ratios

# %%
main = summary[summary["preset"] == hw["preset"]]
table = main.pivot_table(index=["network", "n_crossbars"], columns="scheme", values="cycles").reset_index()
floor = main[main["scheme"] == "reprogram"][["network", "n_crossbars", "floor_cycles"]]
table = table.merge(floor, on=["network", "n_crossbars"])
for preset_name in others:
    rep = summary[(summary["preset"] == preset_name) & (summary["scheme"] == "reprogram")]
    rep = rep[["network", "n_crossbars", "cycles"]].rename(columns={"cycles": f"reprogram_{preset_name}"})
    table = table.merge(rep, on=["network", "n_crossbars"], how="left")
table["basisn_over_reprogram"] = table["basisn"] / table["reprogram"]
table["basisn_over_best"] = table["basisn"] / table["reprogram_best"]
table["basisn_over_digital"] = table["basisn"] / table["digital"]
table["basisn_over_ideal"] = table["basisn"] / table["ideal"]
table["order"] = table["network"].map(networks.index)
table = table.sort_values(["order", "n_crossbars"]).drop(columns="order").reset_index(drop=True)
columns = ["network", "n_crossbars", "ideal", "reprogram", "reprogram_best", "basisn", "digital", "floor_cycles"]
ratio_columns = ["basisn_over_reprogram", "basisn_over_best", "basisn_over_digital", "basisn_over_ideal"]
columns += [f"reprogram_{p}" for p in others] + ratio_columns
table = table[columns]
for column in columns[2 : -len(ratio_columns)]:  # cycles: whole numbers at batch 1, shown without exponents
    if (table[column].dropna() % 1 == 0).all() and not table[column].isna().any():
        table[column] = table[column].astype("int64")
save_table(table, out_dir, "cycles_vs_crossbars")
display(table)

# %% [markdown]
# ## Figure: one panel per network, log-log

# %%
cols = min(4, len(networks))
rows = math.ceil(len(networks) / cols)
fig, axes = plt.subplots(rows, cols, figsize=(FULL_WIDTH, 1.75 * rows + 1.1), squeeze=False)
for ax, name in zip(axes.flat, networks):
    part = table[table["network"] == name]
    for scheme in ("ideal", "reprogram", "reprogram_best", "basisn", "digital", "floor"):
        ax.plot(
            part["n_crossbars"],
            part["floor_cycles" if scheme == "floor" else scheme],
            marker=SCHEME_MARKERS[scheme] or None,
            markersize=3,
            linestyle=SCHEME_LINESTYLES[scheme],
            color=SCHEME_COLORS[scheme],
            label=SCHEME_LABELS[scheme],
            zorder=3 if scheme == "reprogram_best" else 2,  # drawn over plain reprogramming where they meet
        )
    for preset_name, dashes in zip(others[:2], [(1, 1), (4, 1, 1, 1)]):
        ax.plot(
            part["n_crossbars"],
            part[f"reprogram_{preset_name}"],
            dashes=dashes,
            linewidth=0.9,
            color=SCHEME_COLORS["reprogram"],
            alpha=0.55,
            label=f"plain rounds, preset {preset_name}",
        )
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_yscale("log")
    ax.set_title(name)
for ax in axes.flat[len(networks) :]:
    ax.axis("off")
for ax in axes[-1]:
    ax.set_xlabel("crossbars N")
for ax in axes[:, 0]:
    ax.set_ylabel("cycles per inference")
handles, labels = axes.flat[0].get_legend_handles_labels()
fig.legend(handles, labels, loc="lower center", ncol=3, bbox_to_anchor=(0.5, 0.0), frameon=False)
fig.suptitle(
    f"cycles per inference vs crossbars N, {len(networks)} networks x {table['n_crossbars'].nunique()} N; preset "
    f"{hw['preset']}, batch {hw['params']['batch']}, basis n = {hw['basis']['n_basis']}"
)
fig.tight_layout(rect=(0, 0.13, 1, 1))
show(save_figure(fig, out_dir, "cycles_vs_crossbars"))
plt.close(fig)

# %% [markdown]
# ## What we measured

# %%
lines = []
on_paper = table[table["network"].isin(paper)]
ratio = on_paper["basisn_over_reprogram"]
lines.append(
    f"- BasisN / reprogram cycles on the paper's networks (preset {hw['preset']}, N = "
    f"{on_paper['n_crossbars'].min()}-{on_paper['n_crossbars'].max()}): {100 * ratio.min():.3g}% to "
    f"{100 * ratio.max():.3g}%; below 1% at {int((ratio < 0.01).sum())} of {len(ratio)} (network, N) points."
)
below = on_paper[(on_paper["basisn"] < on_paper["ideal"])]
lines.append(
    f"- BasisN is faster than the ideal single-copy mapping at {len(below)} of {len(on_paper)} points: its basis is "
    "replicated over the crossbars while the ideal mapping holds one copy of every weight and runs its layers one "
    "after another (`ideal` is the single-copy reference, not the best mapping: docs/hardware.md, section 5)."
)
ratio = on_paper["basisn_over_best"]
lines.append(
    f"- Against the baseline at its best (`reprogram_best`): {100 * ratio.min():.3g}% to {100 * ratio.max():.3g}%; "
    f"below 1% at {int((ratio < 0.01).sum())} of {len(ratio)} points."
)
ratio = on_paper["basisn_over_digital"]
lines.append(
    f"- BasisN / digital cycles: {100 * ratio.min():.3g}% to {100 * ratio.max():.3g}%; BasisN is faster than the same "
    f"MAC lanes without crossbars at {int((ratio < 1).sum())} of {len(ratio)} points."
)
fits = main[(main["scheme"] == "reprogram") & main["fits"] & main["network"].isin(paper)]
lines.append(
    f"- Reprogramming becomes the ideal mapping once everything fits (Σ t_l ≤ N): {len(fits)} of the "
    f"{len(on_paper)} points."
)
text = "\n".join(lines)
display(Markdown(text))
