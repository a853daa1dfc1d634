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
# # Energy per inference by term: ideal, reprogramming, BasisN and the digital baseline
#
# **What the paper claims.** BasisN's EDP is below 1% of the reprogramming baseline's, with marginal hardware
# cost for the digital unit that combines the basis outputs with each layer's coefficients after the ADCs
# (arXiv 2407.03738, abstract).
#
# **What we measure.** Energy per inference from the cost model (docs/hardware.md section 2), split into its terms:
# `xbar` (array and DACs per crossbar input step), `adc` (column conversions), `shift_add` (recombining column
# outputs), `coef_mac` (BasisN's coefficient multiply-accumulates in the digital unit; a pow2 coefficient is charged
# a shift and an add), `mac` (the dense multiply-accumulates of the `digital` baseline, which runs the network on
# BasisN's digital lanes without crossbars) and `write` (write-and-verify of the weights, paid per batch by
# `reprogram`, write pulses and verify reads; one-time writes are excluded for all schemes) and `static` (leakage of
# powered crossbars and lanes while idle). The digital unit's energy (`coef_mac`) is BasisN's hardware overhead.
# `memory` is the memory traffic (docs/hardware.md section 2): the coefficients BasisN reads per inference and the
# dense weights the digital baseline reads are always charged (operand delivery, from the SRAM when they fit, else
# DRAM); the weights reprogram writes per batch only with memory on (the tables of the later sections take
# `memory.csv` / `memory_ratios.csv` / `storage.csv`, where hw-eval evaluates both ways). The last section lists
# every modelling choice with the side it favours, measured (`fairness.csv`).
#
# **Parameters.** `hardware_dir` (the `hw-eval` output directory) and `crossbars` (N of the breakdown; `None`: the
# middle of the report crossbar counts). The hardware description is printed below from `hw_eval.json`.

# %% tags=["parameters"]
out_dir = "runs/energy"  # a run in JupyterLab writes here; the DVC stage passes its own
hardware_dir = "outputs/hardware"
crossbars = None

# %%
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from basisn.figures import (
    FULL_WIDTH,
    TERM_STYLE,
    load_hw_eval,
    order_networks,
    save_figure,
    save_table,
    set_style,
    show,
)
from basisn.hardware.fairness import favours
from basisn.notebooks import at_repo_root, require

at_repo_root()  # JupyterLab starts the kernel in notebooks/; paths are from the repository root
require(
    *(
        f"{hardware_dir}/{name}"
        for name in ("hw_eval.json", "summary.csv", "memory.csv", "memory_ratios.csv", "storage.csv", "fairness.csv")
    )
)
set_style()
hw_path = Path(hardware_dir)
hw = load_hw_eval(hw_path)
report = hw["params"]["report_crossbars"]
if crossbars is None:
    crossbars = sorted(report)[len(report) // 2]
print("notebook parameters:", json.dumps({"hardware_dir": hardware_dir, "crossbars": crossbars}))

summary = pd.read_csv(hw_path / "summary.csv")
main = summary[(summary["preset"] == hw["preset"]) & (summary["n_crossbars"] == crossbars)]
if main.empty:
    raise ValueError(
        f"crossbars={crossbars} is not in summary.csv; use one of {sorted(summary['n_crossbars'].unique())}"
    )
paper, networks = order_networks(hw, main["network"])
SCHEMES = ["ideal", "reprogram", "basisn", "digital"]
TERMS = ["xbar", "adc", "shift_add", "coef_mac", "mac", "write", "memory", "static"]


# %% [markdown]
# ## Table: energy per inference by term
#
# `share` is the term's share of its scheme's total; `vs_reprogram` is the term over the reprogram scheme's total.

# %%
rows = []
for name in networks:
    part = main[main["network"] == name].set_index("scheme")
    baseline = part.loc["reprogram", "energy_j"]
    for scheme in SCHEMES:
        for term in TERMS:
            energy = float(part.loc[scheme, f"energy_{term}_j"])
            rows.append(
                {
                    "network": name,
                    "n_crossbars": crossbars,
                    "scheme": scheme,
                    "term": term,
                    "energy_j": energy,
                    "share": energy / part.loc[scheme, "energy_j"],
                    "vs_reprogram": energy / baseline,
                }
            )
breakdown = pd.DataFrame(rows)
totals = breakdown.groupby(["network", "scheme"], sort=False)["energy_j"].sum()
check = main.set_index(["network", "scheme"])["energy_j"]
assert all(math.isclose(totals[k], check[k], rel_tol=1e-9, abs_tol=1e-18) for k in totals.index), "terms != total"
save_table(breakdown, out_dir, "energy_breakdown")
display(breakdown.pivot_table(index=["network", "scheme"], columns="term", values="energy_j", sort=False))

# %% [markdown]
# ## Figure: stacked terms, one panel per network (µJ per inference)

# %%
# one colour and a reader's name per term (basisn.figures.TERM_STYLE); the legend lists the terms one can see, and
# the caption names those too small to see in any bar (below 0.5% of every bar), with their largest share
largest = breakdown.groupby("term")["share"].max()
visible = [t for t in TERMS if largest[t] >= 0.005]
hidden = [t for t in TERMS if 0 < largest[t] < 0.005]
BAR_LABELS = {"ideal": "ideal", "reprogram": "reprogramming", "basisn": "BasisN", "digital": "digital lanes"}
cols = min(4, len(networks))
rows_n = math.ceil(len(networks) / cols)
fig, axes = plt.subplots(rows_n, cols, figsize=(FULL_WIDTH, 1.45 * rows_n + 1.0), sharey=True, squeeze=False)
for ax, name in zip(axes.flat, networks):
    part = breakdown[breakdown["network"] == name]
    left = [0.0] * len(SCHEMES)
    for term in TERMS:
        values = [1e6 * part[(part["scheme"] == s) & (part["term"] == term)]["energy_j"].iloc[0] for s in SCHEMES]
        label, color = TERM_STYLE[term]
        ax.barh([BAR_LABELS[s] for s in SCHEMES], values, left=left, color=color, label=label, height=0.7)
        left = [a + b for a, b in zip(left, values)]
    ax.set_xlim(0, 1.1 * max(left))  # room after the longest bar
    ax.set_title(name)
    ax.set_xlabel("µJ per inference")
axes.flat[0].invert_yaxis()  # shared: every panel lists ideal at the top
for ax in axes.flat[len(networks) :]:
    ax.axis("off")
handles, labels = axes.flat[0].get_legend_handles_labels()
shown = [(h, lab) for h, lab, t in zip(handles, labels, TERMS) if t in visible]
fig.legend(*zip(*shown), loc="lower center", ncol=4, bbox_to_anchor=(0.5, 0.0), frameon=False)
note = (
    "; too small to see: " + ", ".join(f"{TERM_STYLE[t][0]} (at most {100 * largest[t]:.2g}%)" for t in hidden)
    if hidden
    else ""
)
fig.suptitle(
    f"energy per inference by term, {len(networks)} networks; preset {hw['preset']}, N = {crossbars}, batch "
    f"{hw['params']['batch']}{note}"
)
fig.tight_layout(rect=(0, 0.1, 1, 1))
show(save_figure(fig, out_dir, "energy_breakdown"))
plt.close(fig)

# %% [markdown]
# ## What we measured

# %%
lines = []
for name in paper:
    part = breakdown[breakdown["network"] == name]
    rep = part[part["scheme"] == "reprogram"].set_index("term")
    bas = part[part["scheme"] == "basisn"].set_index("term")
    dig = part[part["scheme"] == "digital"].set_index("term")
    lines.append(
        f"- {name}, N = {crossbars}: writes are {100 * rep.loc['write', 'share']:.0f}% of the reprogram scheme's "
        f"energy; BasisN uses {100 * bas['vs_reprogram'].sum():.1f}% of it, of which the digital coefficient "
        f"unit (`coef_mac`) is {100 * bas.loc['coef_mac', 'share']:.1f}%; the digital baseline uses "
        f"{100 * dig['vs_reprogram'].sum():.1f}% ({dig['energy_j'].sum() / bas['energy_j'].sum():.2f}x BasisN's)."
    )
text = "\n".join(lines)
display(Markdown(text))


# %% [markdown]
# ## Table: storage per network (dense weights vs. BasisN coefficients vs. the basis)
#
# `dense_weight_bytes`: every weight at `weight_bits`; `coef_bytes`: the coefficients one inference uses at their
# bit width (dense, G = 1, or group-sparse, G > 1, with ceil(log2 G) bits of group index per output channel and
# segment); `basis_bytes`: the n·m basis weights (in the crossbars after one write); `compression_ratio`: dense /
# (coefficients + basis + layers kept dense); `*_fits_sram`: whether it fits the configured buffer (`sram_bytes`).

# %%
storage = pd.read_csv(hw_path / "storage.csv")
storage = storage[storage["network"].isin(networks)]
storage_table = storage[
    [
        "network",
        "groups",
        "dense_weight_bytes",
        "coef_bytes",
        "basis_bytes",
        "kept_dense_bytes",
        "compression_ratio",
        "sram_bytes",
        "dense_fits_sram",
        "coef_fits_sram",
    ]
].reset_index(drop=True)
save_table(storage_table, out_dir, "storage")
display(storage_table)

# %% [markdown]
# ## Table: headline ratios with and without memory traffic, and the term that dominates each scheme
#
# BasisN over reprogram (`*_vs_reprogram`), over the best baseline option (`edp_vs_best`) and over the digital
# baseline (`edp_vs_digital`) at the report crossbar counts, with memory traffic off and on; `dominant_*`: the
# largest energy term of each scheme.

# %%
memory_rows = pd.read_csv(hw_path / "memory.csv")
memory_ratios = pd.read_csv(hw_path / "memory_ratios.csv")
dominant = memory_rows.pivot_table(
    index=["network", "n_crossbars", "memory"], columns="scheme", values="dominant_term", aggfunc="first"
)
dominant = dominant[["reprogram", "basisn", "digital"]].add_prefix("dominant_").reset_index()
headline = memory_ratios.rename(
    columns={
        "cycles_ratio": "cycles_vs_reprogram",
        "energy_ratio": "energy_vs_reprogram",
        "edp_ratio": "edp_vs_reprogram",
        "edp_ratio_best": "edp_vs_best",
        "edp_ratio_digital": "edp_vs_digital",
    }
)
headline = headline[
    [
        "network",
        "n_crossbars",
        "memory",
        "sram_bytes",
        "cycles_vs_reprogram",
        "energy_vs_reprogram",
        "edp_vs_reprogram",
        "edp_vs_best",
        "edp_vs_digital",
    ]
].merge(dominant, on=["network", "n_crossbars", "memory"])
headline = headline[headline["network"].isin(networks)].reset_index(drop=True)
save_table(headline, out_dir, "memory_headline")
display(headline)

# %% [markdown]
# ## Table: energy per inference by term, memory traffic on

# %%
on = memory_rows[memory_rows["memory"].astype(bool) & (memory_rows["n_crossbars"] == crossbars)]
memory_breakdown = []
for name in networks:
    part = on[on["network"] == name].set_index("scheme")
    for scheme in SCHEMES:
        for term in TERMS:
            energy = float(part.loc[scheme, f"energy_{term}_j"])
            memory_breakdown.append(
                {
                    "network": name,
                    "n_crossbars": crossbars,
                    "scheme": scheme,
                    "source": part.loc[scheme, "memory_source"],
                    "term": term,
                    "energy_j": energy,
                    "share": energy / part.loc[scheme, "energy_j"],
                }
            )
memory_breakdown = pd.DataFrame(memory_breakdown)
save_table(memory_breakdown, out_dir, "energy_breakdown_memory")
display(memory_breakdown.pivot_table(index=["network", "scheme"], columns="term", values="energy_j", sort=False))


# %% [markdown]
# ## Table: which side each modelling choice favours, and by how much
#
# Every choice of the cost model that a hardware reviewer could dispute (basisn.hardware.fairness.CHOICES), priced
# both ways for the headline network at N = 64 (or the nearest report N): BasisN / the best reprogramming schedule
# and BasisN / digital EDP with the default and with the alternative. `favours_vs_*` is read from the numbers: if
# the alternative lowers BasisN's ratio by more than 0.5%, the default favours the baseline; if it raises it, the
# default favours BasisN. `fairness.csv` holds every network and report N.

# %%
fairness = pd.read_csv(hw_path / "fairness.csv")
choice_n = 64 if 64 in report else sorted(report)[len(report) // 2]
choice_net = paper[0] if paper else networks[0]
picked = fairness[(fairness["network"] == choice_net) & (fairness["n_crossbars"] == choice_n)]
choices = pd.DataFrame(
    {
        "choice": picked["choice"],
        "default": picked["default"],
        "alternative": picked["alternative"],
        "edp_vs_best": picked["edp_ratio_best"],
        "edp_vs_best_alternative": picked["edp_ratio_best_alt"],
        "favours_vs_best": picked["edp_ratio_best_change"].map(favours),
        "edp_vs_digital": picked["edp_ratio_digital"],
        "edp_vs_digital_alternative": picked["edp_ratio_digital_alt"],
        "favours_vs_digital": picked["edp_ratio_digital_change"].map(favours),
    }
).reset_index(drop=True)
choices.insert(3, "network", choice_net)
choices.insert(4, "n_crossbars", choice_n)
save_table(choices, out_dir, "cost_model_choices")
display(choices)
for side in ("baseline", "BasisN"):
    named = ", ".join(choices.loc[choices["favours_vs_best"] == side, "choice"]) or "none"
    print(f"defaults that favour {'the reprogramming baseline' if side == 'baseline' else 'BasisN'}: {named}")
