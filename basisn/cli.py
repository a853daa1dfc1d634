"""`basisn <command> [options]`: the entry points that `dvc.yaml` and the Makefile call.

Each DVC stage's command lives in basisn/stages/<stage>.py (the stage's name in dvc.yaml; the `nb_*` stages run
`notebook`) and parses its own options; this file only routes, so that `basisn --help` lists everything and
importing one command never imports the others (torch start-up is slow).
"""

from __future__ import annotations

import importlib
import sys

# command -> ("module", "function", one-line help). The function takes argv (list[str]) and returns an exit code.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "data": ("basisn.data", "fetch_main", "fetch the dataset into data/raw (mirror, Debian package, download)"),
    "data-check": ("basisn.stages.data", "main", "stage data: verify data/raw, write a dataset summary"),
    "train": ("basisn.stages.train", "main", "stage train: the dense baseline (torchrun for multi-GPU)"),
    "decompose": ("basisn.stages.decompose", "main", "stage decompose: to_basisn + reconstruction report"),
    "finetune": ("basisn.stages.finetune", "main", "stage finetune: BasisN with quantization + distillation"),
    "evaluate": ("basisn.stages.evaluate", "main", "stage evaluate: dense vs decomposed vs BasisN accuracy"),
    "sweep": ("basisn.stages.sweep", "main", "stage sweep: n_basis x coef_bits"),
    "tradeoff": ("basisn.stages.tradeoff", "main", "stage tradeoff: accuracy and cost of the same models, G x bits"),
    "claim-region": (
        "basisn.stages.claim_region",
        "main",
        "stage claim_region: where BasisN / reprogramming is below 1%, and its sensitivity",
    ),
    "notebook": ("basisn.stages.notebook", "main", "execute a notebook (jupytext + papermill) into paper_figures"),
    "hw-eval": ("basisn.stages.hardware", "main", "cost model: cycles, energy, EDP of every scheme"),
    "robustness": ("basisn.stages.robustness", "main", "accuracy under analog crossbar non-idealities"),
    "summary": ("basisn.summary", "summary_main", "after make repro: accuracy, headline ratios, where the files are"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: basisn <command> [options]   (basisn <command> --help for its options; basisn --version)", "",
             "commands:"]  # fmt: skip
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":  # without importing torch or any command
        from basisn import __version__

        print(f"basisn {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"basisn: unknown command {command!r}; allowed: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module, function, _ = COMMANDS[command]
    return int(getattr(importlib.import_module(module), function)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
