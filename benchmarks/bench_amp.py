"""bf16 autocast vs fp32 on this CPU, and what a cached teacher saves, side by side in one run.

    python benchmarks/bench_amp.py [--rounds 7] [--batch 128] [--threads N] [--out results.json]

For the default pipeline's model (small ResNet, 28x28x1, batch 128 as params.yaml's data.batch_size):
(1) one dense training step (forward, loss, backward, SGD update) in fp32 and under
    torch.autocast("cpu", torch.bfloat16) — the train stage's step;
(2) one distilled BasisN fine-tune step (n = 64, m = 128, 4-bit coefficients, G = 1: the finetune stage's model)
    with the teacher's forward, fp32 and bf16 — and the same step with the teacher's logits given (what
    basisn.train.TeacherCache makes of every fine-tune after the first one over the same batches).
Each pair alternates within every round and the ratio is the median of the per-round ratios, so the drift of a
shared machine cancels. `autocast_enabled("auto", cpu)` is printed: what the pipeline chooses here.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from basisn import to_basisn
from basisn.models import build_model
from basisn.train import autocast_enabled, distillation_loss, native_bf16_cpu


def step_of(model, x, y, bf16: bool, teacher=None, teacher_logits=None):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if teacher is not None or teacher_logits is not None:
                with torch.no_grad():
                    target = teacher(x) if teacher is not None else teacher_logits
                loss = 0.1 * loss + 0.9 * distillation_loss(logits, target, 4.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def seconds(step, repeats: int) -> float:
    step()  # warm-up: oneDNN primitive creation
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - started) / repeats


def compare(name: str, steps: dict, rounds: int, repeats: int) -> dict:
    """Median seconds per step of each variant and the median per-round ratio to the first one."""
    times = {k: [] for k in steps}
    for _ in range(rounds):
        for key, step in steps.items():
            times[key].append(seconds(step, repeats))
    first = next(iter(steps))
    result = {"case": name}
    for key in steps:
        result[f"{key}_ms"] = 1e3 * statistics.median(times[key])
        result[f"{key}_speedup"] = statistics.median(a / b for a, b in zip(times[first], times[key]))
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))
    dense = build_model("small_resnet", 10, 1).to(memory_format=torch.channels_last).train()
    teacher = copy.deepcopy(dense).eval()
    student, _ = to_basisn(copy.deepcopy(dense), n_basis=64, segment_len=128, coef_bits=4, basis_bits=8)
    student = student.to(memory_format=torch.channels_last).train()
    with torch.no_grad():
        logits = teacher(x)
    info = dict(
        machine=platform.processor() or platform.machine(),
        threads=torch.get_num_threads(),
        native_bf16=native_bf16_cpu(),
        auto_chooses_bf16=autocast_enabled("auto", torch.device("cpu")),
        torch=torch.__version__,
        batch=args.batch,
    )
    print(json.dumps(info), flush=True)
    results = [
        compare(
            "dense train step",
            {"fp32": step_of(dense, x, y, False), "bf16": step_of(copy.deepcopy(dense), x, y, True)},
            args.rounds,
            args.repeats,
        ),
        compare(
            "BasisN fine-tune step (KD)",
            {
                "fp32": step_of(student, x, y, False, teacher=teacher),
                "bf16": step_of(copy.deepcopy(student), x, y, True, teacher=teacher),
                "bf16_cached_teacher": step_of(copy.deepcopy(student), x, y, True, teacher_logits=logits),
            },
            args.rounds,
            args.repeats,
        ),
    ]
    if args.out:
        args.out.write_text(json.dumps(dict(info, results=results), indent=1) + "\n")


if __name__ == "__main__":
    main()
