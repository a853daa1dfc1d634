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

from basisn.figures import save_figure, save_table, set_style, show
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
done = table[table["status"] == "run"]
fig, ax = plt.subplots(figsize=(max(4.5, 1.8 * len(done) + 2.5), 3.4))
labels = {
    "dense_accuracy": "dense",
    "decomposed_accuracy": "decomposed (before fine-tune)",
    "basisn_accuracy": "BasisN",
}
width = 0.8 / len(labels)
for i, (key, label) in enumerate(labels.items()):
    bars = ax.bar([x + (i - 1) * width for x in range(len(done))], done[key], width=width, label=label)
    # the value on every bar: differences of a fraction of a point are invisible on any accuracy axis
    ax.bar_label(bars, labels=[f"{100 * v:.2f}%" for v in done[key]], fontsize=6, padding=2)
ax.set_xticks(
    range(len(done)),
    [
        f"{r.profile}\n{r.dataset}, {r.model}\nBasisN {r.basisn_minus_dense_pp:+.2f} pp vs dense"
        for r in done.itertuples()
    ],
)
if done.empty:
    ax.text(0.5, 0.5, "no profile has been run", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylim(0, 1)
else:  # zoomed on the values (not 0-1), with room for the labels; the axis does not start at zero
    values = done[list(labels)].to_numpy().ravel()
    span = max(values.max() - values.min(), 0.01)
    ax.set_ylim(max(0.0, values.min() - 0.6 * span), min(1.0, values.max() + 0.4 * span) + 0.02)
ax.set_ylabel("test accuracy (axis zoomed)")
ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=len(labels))
show(save_figure(fig, out_dir, "accuracy_profiles"))
plt.close(fig)

per_class = pd.read_csv(per_class_file)
beside = Path(per_class_file).parent / "metrics.json"  # the evaluate run the per-class file belongs to
title = f"profile {json.loads(beside.read_text())['profile']}" if beside.is_file() else per_class_file
fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(per_class)), 3.2))
models = {"dense": "dense", "decomposed": "decomposed (before fine-tune)", "basisn": "BasisN"}
width = 0.8 / len(models)
for i, (model, label) in enumerate(models.items()):
    ax.bar([x + (i - 1) * width for x in range(len(per_class))], per_class[model], width=width, label=label)
ax.set_xticks(range(len(per_class)), per_class["class"], rotation=30, ha="right")
ax.set_ylim(0, 1)
ax.set_ylabel("per-class test accuracy")
ax.set_title(title)
ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=len(models))  # below: covers no bar
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
print(text)
display(Markdown(text))
