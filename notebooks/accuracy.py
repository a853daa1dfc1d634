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
# # Accuracy: dense vs. decomposed vs. BasisN
#
# **What the paper claims.** Representing every kernel as quantized coefficients of global basis vectors costs
# *negligible* accuracy (and negligible training), for ResNet and DenseNet on CIFAR-100 and ImageNet
# (arXiv 2407.03738, abstract). The paper's accuracy numbers are not available to us, so the table carries its
# claim as text, never as numbers.
#
# **What we measure.** For every profile of params.yaml (`profiles:`): test accuracy of the dense baseline
# (`train`), of the decomposed model before fine-tuning (`decompose`) and of BasisN after fine-tuning
# (`finetune`), all from `outputs/evaluate/metrics.json` of a workspace that ran that profile. A DVC workspace holds
# one profile's outputs; pass the `metrics.json` of other runs in `accuracy_files` to add their rows. Profiles with
# no file are listed as "not run". Training cost (epochs and seconds of the baseline and of the fine-tune) comes
# from `train/metrics.json` and `finetune/metrics.json` next to each `evaluate/` directory, where present.
#
# **Parameters.** `accuracy_files` (list of evaluate `metrics.json`), `per_class_file` (per-class accuracy of the
# first file's run), `params_file` (for the profile list); printed below with the runs' own parameters.

# %% tags=["parameters"]
out_dir = "runs/accuracy"  # a run in JupyterLab writes here; the DVC stage passes its own
accuracy_files = ["outputs/evaluate/metrics.json"]
per_class_file = "outputs/evaluate/per_class.csv"
params_file = "params.yaml"

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import yaml
from IPython.display import Markdown, display

from basisn.figures import COLUMN_WIDTH, FULL_WIDTH, OKABE_ITO, SCHEME_COLORS, save_figure, save_table, set_style, show
from basisn.notebooks import at_repo_root, require
from basisn.params import resolve

at_repo_root()  # JupyterLab starts the kernel in notebooks/; paths are from the repository root
require(*([accuracy_files] if isinstance(accuracy_files, str) else accuracy_files), per_class_file, params_file)
set_style()
if isinstance(accuracy_files, str):  # `-p accuracy_files=path` gives one path
    accuracy_files = [accuracy_files]
print(
    "notebook parameters:",
    json.dumps(dict(accuracy_files=accuracy_files, per_class_file=per_class_file, params_file=params_file), indent=1),
)
raw_params = yaml.safe_load(Path(params_file).read_text())
profiles = list(raw_params["profiles"])
print(f"profiles in {params_file}: {', '.join(profiles)}")

runs = {}
for name in accuracy_files:
    path = Path(name)
    metrics = json.loads(path.read_text())
    profile = metrics["profile"]
    if profile in runs:
        raise ValueError(f"{path} and {runs[profile]['path']} both hold profile {profile!r}; pass one file per profile")
    runs[profile] = {"path": path, "metrics": metrics}
    for stage in ("train", "finetune"):
        sibling = path.parent.parent / stage / "metrics.json"
        runs[profile][stage] = json.loads(sibling.read_text()) if sibling.is_file() else None
    print(f"{path}: profile {profile!r}")
    print(json.dumps(metrics, indent=1, sort_keys=True))
    used = path.parent.parent / "finetune" / "params.json"
    if used.is_file():
        run_params = json.loads(used.read_text())
        shown = {k: run_params[k] for k in ("profile", "seed", "data", "model", "train", "decompose", "finetune")}
        print(f"parameters of that run ({used}):")
        print(json.dumps(shown, indent=1, sort_keys=True))


def ints(values):
    """Whole numbers as ints and missing ones as empty cells (not <NA> or 5e+04) in every table format."""
    return pd.Series([("" if pd.isna(v) else int(v)) for v in values], dtype=object)


# %% [markdown]
# ## Accuracy table
#
# Accuracies are fractions of the test set; `*_minus_dense_pp` are differences in percentage points.
# `basisn_folded_accuracy` is the fine-tuned BasisN model folded back into dense weights (what a deployment runs; it
# must equal `basisn_accuracy`). `paper_setting` says whether the profile's dataset is one the paper evaluates;
# `training` is the profile's schedule as params.yaml states it now.

# %%
PAPER_DATASETS = {"cifar100": "CIFAR-100", "imagenet": "ImageNet"}
ACCURACY = ["dense_accuracy", "decomposed_accuracy", "basisn_accuracy", "basisn_folded_accuracy"]
rows = []
for profile in profiles + [p for p in runs if p not in profiles]:
    row = {"profile": profile}
    if profile in profiles:
        p = resolve(raw_params, profile)
        subset = p["data"]["subset"]
        row.update(
            dataset=p["data"]["dataset"],
            model=p["model"]["name"],
            training=(
                f"{p['train']['epochs']} + {p['finetune']['epochs']} fine-tune epochs, "
                + ("all" if subset is None else str(subset))
                + " train images"
            ),
        )
    row["paper_setting"] = row.get("dataset") in PAPER_DATASETS
    run = runs.get(profile)
    row["status"] = "run" if run else "not run"
    metrics = run["metrics"] if run else {}
    for key in [
        "test_samples",
        *ACCURACY,
        "decomposed_minus_dense_pp",
        "basisn_minus_dense_pp",
        "n_basis",
        "coef_bits",
    ]:
        row[key] = metrics.get(key)  # None (an empty cell) where the profile has not been run: never a number
    row["paper_claim"] = (
        f"negligible accuracy loss ({PAPER_DATASETS[row['dataset']]})"
        if row["paper_setting"]
        else "not a setting of the paper"
    )
    rows.append(row)
table = pd.DataFrame(rows)
for key in ["test_samples", "n_basis", "coef_bits"]:
    table[key] = ints(table[key])
for key in [*ACCURACY, "decomposed_minus_dense_pp", "basisn_minus_dense_pp"]:
    table[key] = table[key].astype("float64")
save_table(table, out_dir, "accuracy_profiles")
display(table)

# %% [markdown]
# ## Training cost
#
# Epochs and wall-clock seconds of the dense baseline (`train`) and of BasisN's fine-tune (`finetune`) of every
# run, from the `metrics.json` files next to its `evaluate/` directory (empty where a file is missing).

# %%
cost_rows = []
for profile, run in runs.items():
    train, finetune = run["train"] or {}, run["finetune"] or {}
    cost_rows.append(
        {
            "profile": profile,
            "train_epochs": train.get("epochs"),
            "train_seconds": train.get("stage_seconds"),
            "finetune_epochs": finetune.get("epochs"),
            "finetune_seconds": finetune.get("stage_seconds"),
        }
    )
cost = pd.DataFrame(
    cost_rows, columns=["profile", "train_epochs", "train_seconds", "finetune_epochs", "finetune_seconds"]
)
for key in ["train_epochs", "finetune_epochs"]:
    cost[key] = ints(cost[key])
for key in ["train_seconds", "finetune_seconds"]:
    cost[key] = cost[key].astype("float64")
cost["finetune_over_train_seconds"] = cost["finetune_seconds"] / cost["train_seconds"]
save_table(cost, out_dir, "accuracy_training_cost")
display(cost)

# %% [markdown]
# ## Figures: accuracy per run profile, and per class for the first run

# %%
# a dot plot, not bars: accuracies differ by fractions of a point, and a bar's length on an axis that does not
# start at zero would misstate them; dots on a zoomed axis say only where each value is. Every value is written.
done = table[table["status"] == "run"].reset_index(drop=True)
fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 1.0 + 0.55 * max(1, len(done))))
labels = {
    "dense_accuracy": ("dense", SCHEME_COLORS["ideal"], "o"),
    "decomposed_accuracy": ("decomposed (before fine-tune)", OKABE_ITO["orange"], "^"),
    "basisn_accuracy": ("BasisN (fine-tuned)", SCHEME_COLORS["basisn"], "s"),
}
for i, (key, (label, color, marker)) in enumerate(labels.items()):
    y = [row + 0.18 * (i - 1) for row in range(len(done))]
    ax.scatter(100 * done[key], y, color=color, marker=marker, label=label, zorder=3)
    for x, yy in zip(100 * done[key], y):
        ax.annotate(f"{x:.2f}%", (x, yy), xytext=(4, 0), textcoords="offset points", va="center", fontsize=6)
ax.set_yticks(
    range(len(done)),
    [
        f"{r.profile}\n{r.dataset}, {r.model}\n{r.test_samples:,} test images\nBasisN {r.basisn_minus_dense_pp:+.2f} pp"
        for r in done.itertuples()
    ],
)
ax.invert_yaxis()
if done.empty:
    ax.text(0.5, 0.5, "no profile has been run", ha="center", va="center", transform=ax.transAxes)
else:  # zoomed on the values, with room for the labels on the right
    values = 100 * done[list(labels)].to_numpy().ravel()
    span = max(values.max() - values.min(), 1.0)
    ax.set_xlim(values.min() - 0.15 * span, min(100.0, values.max() + 0.35 * span))
    ax.set_ylim(len(done) - 0.5, -0.5)
ax.set_xlabel("test accuracy (%)")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(done) < 2 else -0.2), ncol=1, frameon=False)
show(save_figure(fig, out_dir, "accuracy_profiles"))
plt.close(fig)

per_class = pd.read_csv(per_class_file)
beside = Path(per_class_file).parent / "metrics.json"  # the evaluate run the per-class file belongs to
if beside.is_file():
    run = json.loads(beside.read_text())
    title = f"profile {run['profile']}, {run['test_samples']:,} test images over {len(per_class)} classes"
else:
    title = per_class_file
fig, ax = plt.subplots(figsize=(FULL_WIDTH, 2.8))
models = {
    "dense": ("dense", SCHEME_COLORS["ideal"]),
    "decomposed": ("decomposed (before fine-tune)", OKABE_ITO["orange"]),
    "basisn": ("BasisN (fine-tuned)", SCHEME_COLORS["basisn"]),
}
width = 0.8 / len(models)
for i, (model, (label, color)) in enumerate(models.items()):
    x = [k + (i - 1) * width for k in range(len(per_class))]
    ax.bar(x, 100 * per_class[model], width=width, label=label, color=color)
ax.set_xticks(range(len(per_class)), per_class["class"], rotation=30, ha="right")
ax.set_ylim(0, 100)
ax.set_ylabel("per-class test accuracy (%)")
ax.set_title(title)
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=len(models), frameon=False)  # below: covers no bar
show(save_figure(fig, out_dir, "accuracy_per_class"))
plt.close(fig)

# %% [markdown]
# ## What we measured

# %%
lines = []
for r in done.itertuples():
    lines.append(
        f"- `{r.profile}` ({r.dataset}, {r.model}, {r.training}): dense {100 * r.dense_accuracy:.2f}%, "
        f"decomposed {100 * r.decomposed_accuracy:.2f}% ({r.decomposed_minus_dense_pp:+.2f} pp), "
        f"BasisN {100 * r.basisn_accuracy:.2f}% ({r.basisn_minus_dense_pp:+.2f} pp) on {r.test_samples} test images."
    )
missing = table.loc[table["status"] == "not run", "profile"].tolist()
if missing:
    lines.append(f"- Not run in these results (no numbers shown): {', '.join(missing)}.")
lines.append(
    "- The paper's claim (negligible accuracy loss) concerns CIFAR-100 and ImageNet; only profiles marked "
    "`paper_setting` test it directly."
)
text = "\n".join(lines)
display(Markdown(text))
