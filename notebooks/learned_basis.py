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
# # The learned basis and its coefficients
#
# **What the paper claims.** One set of global basis vectors, shared by all layers, is written once into the
# crossbars; every kernel is a combination of them with quantized coefficients applied digitally after the ADCs
# (arXiv 2407.03738, abstract).
#
# **What we measure.** From the `evaluate` stage's plain-data views of the models (the notebooks never load
# checkpoints): the quantized basis `Q_b(B)` (n vectors of length m = crossbar rows) right after the SVD
# decomposition and after fine-tuning, and the histogram of the quantized coefficients `Q_c(A)` of all layers, each
# divided by its output channel's largest magnitude so that the quantizer levels line up across channels. From the
# `decompose` stage: the relative reconstruction error of every layer's weights.
#
# **Parameters.** `basis_file`, `coefficients_file` (evaluate stage), `decompose_report`, `decompose_metrics`
# (decompose stage) and `max_vectors` (basis vectors drawn); printed below with the decomposition's settings.

# %% tags=["parameters"]
out_dir = "runs/learned_basis"  # a run in JupyterLab writes here; the DVC stage passes its own
basis_file = "outputs/evaluate/basis.csv"
coefficients_file = "outputs/evaluate/coefficients.csv"
decompose_report = "outputs/decompose/report.csv"
decompose_metrics = "outputs/decompose/metrics.json"
max_vectors = 16

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from basisn.figures import FULL_WIDTH, SCHEME_COLORS, save_figure, save_table, set_style, show
from basisn.notebooks import at_repo_root, require

at_repo_root()  # JupyterLab starts the kernel in notebooks/; paths are from the repository root
require(basis_file, coefficients_file, decompose_report, decompose_metrics)
set_style()
mine = dict(
    basis_file=basis_file,
    coefficients_file=coefficients_file,
    decompose_report=decompose_report,
    decompose_metrics=decompose_metrics,
    max_vectors=max_vectors,
)
print("notebook parameters:", json.dumps(mine, indent=1))
decomposition = json.loads(Path(decompose_metrics).read_text())
print(f"decompose metrics and settings ({decompose_metrics}):")
print(json.dumps(decomposition, indent=1, sort_keys=True))

basis = pd.read_csv(basis_file)
coefficients = pd.read_csv(coefficients_file)
report = pd.read_csv(decompose_report)
STAGES = ["decomposed", "finetuned"]


def matrix(stage):
    part = basis[basis["stage"] == stage]
    return part.pivot(index="vector", columns="position", values="value").sort_index().to_numpy()


# %% [markdown]
# ## The basis before and after fine-tuning
#
# Rows are basis vectors (the first `max_vectors`), columns positions along a segment (crossbar rows).

# %%
before, after = matrix("decomposed"), matrix("finetuned")
shown = min(max_vectors, before.shape[0])
change = np.linalg.norm(after - before) / np.linalg.norm(before)
limit = float(np.abs(np.concatenate([before[:shown], after[:shown]])).max())
fig, axes = plt.subplots(3, 1, figsize=(FULL_WIDTH, 1.2 + 3 * max(0.9, 0.12 * shown)), sharex=True)
panels = [(before, "after decomposition (SVD)"), (after, "after fine-tuning"), (after - before, "change")]
for ax, (values, title) in zip(axes, panels):
    scale = limit if title != "change" else max(float(np.abs(values[:shown]).max()), 1e-12)
    image = ax.imshow(values[:shown], aspect="auto", cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
    ax.set_title(title)
    ax.set_ylabel("vector")
    ax.grid(False)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
axes[-1].set_xlabel("position in segment (crossbar row)")
fig.suptitle(f"quantized basis, first {shown} of {before.shape[0]} vectors of length {before.shape[1]}")
fig.tight_layout()
show(save_figure(fig, out_dir, "learned_basis_vectors"))
plt.close(fig)

# %% [markdown]
# ## Coefficient histograms
#
# All layers together, weighted by how often each (channel-normalised) value occurs; `share` is its share of the
# stage's coefficients.

# %%
levels = coefficients.groupby(["stage", "value"], as_index=False)["count"].sum()
levels["share"] = levels["count"] / levels.groupby("stage")["count"].transform("sum")
levels = levels.assign(rank=levels["stage"].map(STAGES.index)).sort_values(["rank", "value"]).drop(columns="rank")
levels = levels.reset_index(drop=True)
save_table(levels, out_dir, "learned_basis_coefficients")
display(levels.pivot_table(index="value", columns="stage", values="share"))

edges = np.linspace(-1.0, 1.0, 52)
fig, axes = plt.subplots(1, 2, figsize=(FULL_WIDTH, 2.6), sharey=True)
for ax, stage in zip(axes, STAGES):
    part = levels[levels["stage"] == stage]
    ax.hist(part["value"], bins=edges, weights=part["share"], color=SCHEME_COLORS["basisn"])
    ax.set_yscale("log")
    ax.set_title(f"{stage} ({int(part['count'].sum()):,} coefficients)")
    ax.set_xlabel("coefficient / channel max |coefficient|")
axes[0].set_ylabel("share of coefficients")
bits = decomposition.get("decompose_coef_bits")
fig.suptitle(f"{bits}-bit {decomposition.get('decompose_coef_quant')} coefficients, all layers")
fig.tight_layout()
show(save_figure(fig, out_dir, "learned_basis_coefficients"))
plt.close(fig)

# %% [markdown]
# ## Per-layer reconstruction error and coefficient use
#
# `rel_error` is ‖W − Ŵ‖/‖W‖ of the quantized decomposition, `rel_error_unquantized` the same before quantizing;
# `zero_share` and `levels_used` describe the fine-tuned layer's normalised coefficients.

# %%
tuned = coefficients[coefficients["stage"] == "finetuned"]
use = tuned.groupby("layer").apply(
    lambda d: pd.Series(
        {"zero_share": d.loc[d["value"] == 0, "count"].sum() / d["count"].sum(), "levels_used": len(d)}
    ),
    include_groups=False,
)
layers = report.merge(use, left_on="name", right_index=True, how="left")
layers["levels_used"] = layers["levels_used"].astype("int64")
save_table(layers, out_dir, "learned_basis_layers")
display(layers)

# %% [markdown]
# ## What we measured

# %%
worst = layers.loc[layers["rel_error"].idxmax()]
shares = levels.pivot_table(index="value", columns="stage", values="share")
lines = [
    f"- One basis of {decomposition['decompose_n_basis']} vectors of length {decomposition['decompose_segment_len']} "
    f"serves {len(report)} layers "
    f"({int(report['weights'].sum()):,} weights, {int(report['coefficients'].sum()):,} coefficients).",
    f"- Fine-tuning changed the basis by {100 * change:.1f}% (relative Frobenius norm over the {before.shape[0]} "
    f"vectors in {basis_file}).",
    f"- Reconstruction error before fine-tuning: {decomposition['rel_error_mean']:.3f} mean over layers, "
    f"{decomposition['rel_error_weighted']:.3f} weighted by weights; worst layer {worst['name']} "
    f"({worst['rel_error']:.3f}).",
    "- Distinct normalised coefficient values: "
    + ", ".join(f"{stage} {int(shares[stage].notna().sum())}" for stage in STAGES if stage in shares)
    + f"; zero coefficients after fine-tuning: {100 * shares.get('finetuned', pd.Series()).get(0.0, 0.0):.1f}%.",
]
text = "\n".join(lines)
display(Markdown(text))
