"""`finetune` stage (`basisn finetune`): the decomposed model's coefficients, basis and BN trained with quantization
in the loop, distilled from the dense baseline (the loop is the train stage's, basisn.stages.train.fit_stage)."""

from __future__ import annotations

from basisn.stages.common import one_line_errors, parser, prepare
from basisn.stages.train import fit_stage


@one_line_errors
def main(argv: list[str]) -> int:
    """`finetune` stage: coefficients, basis and BN with quantization in the loop, distilled from the baseline."""
    arguments = parser("finetune", "fine-tune the decomposed BasisN model", "outputs/finetune")
    arguments.add_argument(
        "--decomposed", default="outputs/decompose/model.pt", help="BasisN model to fine-tune (decompose stage)"
    )
    arguments.add_argument(
        "--teacher", default="outputs/train/model.pt", help="distillation teacher (the train stage's dense model)"
    )
    args = arguments.parse_args(argv)
    p, lock = prepare(args)
    with lock:
        return fit_stage(p, args, "finetune")
