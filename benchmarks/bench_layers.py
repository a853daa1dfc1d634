"""Basis-mapped layers vs. ordinary ones, side by side in one run: training step, deployed inference, decomposition.

    python benchmarks/bench_layers.py [--device cpu|cuda] [--threads N] [--rounds 9] [--[no-]channels-last]
                                      [--interleave] [--compile] [--models NAME ...] [--groups 1 4 8] [--skip-resnet50]
                                      [--out results.json]

(1) one SGD training step (forward, backward, update) of a basis-mapped model vs. the same dense model, for the
default small ResNet (28x28x1) and CIFAR-style ResNet-18 (32x32x3), at each bank group count G of `--groups`
(random valid groups per segment: the cost does not depend on which), plus G = 4 with every segment unassigned
(segment_group -1, the learned-assignment phase of a fine-tune) or dynamic (-2, the dynamic option's), G = 1 with
the rebuild skipped (a diagnostic: what of the overhead is not the rebuild), and the dense step against an
identical dense copy (the noise floor of a step ratio); (2) inference of `to_dense(model)` vs. the
dense model, and of an identical copy of the dense model vs. itself (the noise floor of a ratio); (3) `to_basisn`
on torchvision ResNet-50. Timings use torch.utils.benchmark; dense and basis-mapped are measured in alternating
rounds and the ratio is the median of the per-round ratios, so drift of a shared machine cancels instead of
landing on one side; `--interleave` alternates single calls within each round too (each side's median call), for
a machine whose speed drifts within a round. `--compile` adds each model's eager vs. torch.compile training step
and compares the two compiled models (compile time is spent in the warm-up, outside the timings).
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
import torch.utils.benchmark as benchmark
import torchvision

import basisn
from basisn.layers import DYNAMIC, UNASSIGNED
from basisn.models import build_model

CASES = [  # model, (C, H, W), classes, batch on CPU, batch on CUDA
    ("small_resnet", (1, 28, 28), 10, 128, 256),
    ("cifar_resnet18", (3, 32, 32), 100, 128, 256),
]


def training_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, use_amp: bool):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def inference(model: torch.nn.Module, x: torch.Tensor):
    def run() -> None:
        with torch.no_grad():
            model(x)

    return run


def median_time(fn, device: torch.device, min_run_time: float) -> float:
    sync = "torch.cuda.synchronize()" if device.type == "cuda" else "pass"
    # Timer runs on ONE thread unless told otherwise; measure with the threads the run was asked for
    timer = benchmark.Timer(
        stmt="fn(); " + sync, globals={"fn": fn, "torch": torch}, num_threads=torch.get_num_threads()
    )
    return timer.blocked_autorange(min_run_time=min_run_time).median


def interleaved_medians(reference, candidate, device: torch.device, min_run_time: float) -> tuple[float, float]:
    """One round of `--interleave`: single calls of reference and candidate in turn until each has run for
    `min_run_time`, then the median of each side's calls. Drift of a shared machine slower than one call hits
    both sides alike, where a block of calls per side (blocked_autorange) lets it land on one of them."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    calls: tuple[list[float], list[float]] = ([], [])
    while sum(calls[0]) < min_run_time or len(calls[0]) < 5:
        for fn, times in zip((reference, candidate), calls):
            started = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - started)
    return statistics.median(calls[0]), statistics.median(calls[1])


INTERLEAVE = False  # set by --interleave


def compare(reference, candidate, device: torch.device, rounds: int, min_run_time: float) -> dict:
    """Alternate reference/candidate `rounds` times; per-round ratios, their median, min-max and quartiles."""
    for fn in (reference, candidate):  # warm-up (oneDNN/cuDNN algorithm choice, allocator)
        for _ in range(3):
            fn()
    times_ref, times_new = [], []
    for _ in range(rounds):
        if INTERLEAVE:
            ref, new = interleaved_medians(reference, candidate, device, min_run_time)
        else:
            ref, new = median_time(reference, device, min_run_time), median_time(candidate, device, min_run_time)
        times_ref.append(ref)
        times_new.append(new)
    ratios = [n / r for n, r in zip(times_new, times_ref)]
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return dict(
        ratio_q1=quartiles[0],
        ratio_q3=quartiles[2],
        reference_s=statistics.median(times_ref),
        candidate_s=statistics.median(times_new),
        ratio=statistics.median(ratios),
        ratio_min=min(ratios),
        ratio_max=max(ratios),
    )


def assign_random_groups(model: torch.nn.Module, groups: int, fill: int | None = None) -> torch.nn.Module:
    """Random valid groups for every segment, or `fill` for all (UNASSIGNED -1: the learned option's open phase;
    DYNAMIC -2: the dynamic option's): step cost does not depend on which group a segment uses, only on whether
    the model is hardened."""
    generator = torch.Generator().manual_seed(0)
    for _, layer in basisn.basis_layers(model):
        if layer.segment_group is not None:
            values = torch.randint(0, groups, layer.segment_group.shape, generator=generator)
            layer.segment_group.copy_(values if fill is None else torch.full_like(values, fill))
    return model


def without_rebuild(step, model: torch.nn.Module):
    """`step` with the basis model's rebuild replaced by fixed weight tensors (leaves with gradients): a
    diagnostic row that leaves every other cost of the basis model (the hooks, the weight property, the layers)
    in the step; coefficients and scales get no gradient, so the optimizer skips them as it skips the rebuild's
    backward. Its ratio minus 1 is what is NOT the rebuild."""
    weights = basisn.layers.rebuild_layer_weights(model.basisn_bank.layers)
    fixed = [weight.detach().requires_grad_() for weight in weights]

    def run() -> None:
        real = basisn.layers.rebuild_layer_weights
        basisn.layers.rebuild_layer_weights = lambda layers: fixed
        try:
            step()
        finally:
            basisn.layers.rebuild_layer_weights = real

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--min-run-time", type=float, default=0.5)
    parser.add_argument("--n-basis", type=int, default=64)
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="NHWC activations and weights (default: on CUDA only)",
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="within each round, alternate single calls of the two sides (finer than a block per side)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile both models of the training step")
    parser.add_argument("--models", nargs="+", choices=[case[0] for case in CASES], default=[case[0] for case in CASES])
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 4, 8], help="bank groups G to time")
    parser.add_argument("--skip-resnet50", action="store_true", help="do not time to_basisn(resnet50)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global INTERLEAVE
    INTERLEAVE = args.interleave
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    channels_last = on_cuda if args.channels_last is None else args.channels_last
    torch.manual_seed(0)
    results: dict = dict(
        machine=dict(
            device=torch.cuda.get_device_name() if on_cuda else platform.processor() or platform.machine(),
            threads=args.threads,
            channels_last=channels_last,
            compile=args.compile,
            interleave=args.interleave,
            torch=torch.__version__,
        ),
        cases=[],
    )
    layout = "NHWC (channels_last)" if channels_last else "NCHW"
    compiled_note = ", training step under torch.compile" if args.compile else ""
    print(
        f"device {results['machine']['device']}, {args.threads} threads, {layout}{compiled_note}, "
        f"torch {torch.__version__}"
    )
    print(f"{'case':<58} {'reference':>11} {'candidate':>11} {'ratio':>7}  (IQR; min-max over {args.rounds} rounds)")
    for name, shape, classes, cpu_batch, cuda_batch in [case for case in CASES if case[0] in args.models]:
        batch = cuda_batch if on_cuda else cpu_batch
        dense = build_model(name, classes, shape[0]).to(device)
        twin_dense = copy.deepcopy(dense)
        mapped_models = {}  # label -> basis-mapped model
        for groups in args.groups:
            mapped, _ = basisn.to_basisn(copy.deepcopy(dense), args.n_basis, groups=groups)
            mapped_models[f"G={groups}"] = assign_random_groups(mapped.to(device), groups)
        if 4 in args.groups and args.n_basis % 4 == 0:  # the learned and dynamic options before hardening
            for label, fill in (("unassigned (-1)", UNASSIGNED), ("dynamic (-2)", DYNAMIC)):
                mapped, _ = basisn.to_basisn(copy.deepcopy(dense), args.n_basis, groups=4)
                mapped_models[f"G=4, {label}"] = assign_random_groups(mapped.to(device), 4, fill)
        x = torch.randn(batch, *shape, device=device)
        y = torch.randint(0, classes, (batch,), device=device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            for model in (dense, twin_dense, *mapped_models.values()):
                model.to(memory_format=torch.channels_last)
        for model in (dense, twin_dense, *mapped_models.values()):
            model.train()

        def compare_steps(reference: torch.nn.Module, candidate: torch.nn.Module, x=x, y=y) -> dict:
            steps = (training_step(model, x, y, on_cuda) for model in (reference, candidate))
            return compare(*steps, device, args.rounds, args.min_run_time)

        rows = []
        note = " (both compiled)" if args.compile else ""
        dense_step = torch.compile(dense) if args.compile else dense
        twin_step = torch.compile(twin_dense) if args.compile else twin_dense
        rows.append((f"{name} train step: dense copy (noise floor){note}", compare_steps(dense_step, twin_step)))
        for label, mapped in mapped_models.items():
            mapped_step = torch.compile(mapped) if args.compile else mapped
            if args.compile:  # compiled vs. eager for each model, then the two compiled models against each other
                rows.append((f"{name} {label} basisn step: eager vs compile", compare_steps(mapped, mapped_step)))
            rows.append((f"{name} train step, batch {batch}, {label}{note}", compare_steps(dense_step, mapped_step)))
            if label == "G=1" and not args.compile:
                skipped = without_rebuild(training_step(mapped, x, y, on_cuda), mapped)
                reference = training_step(dense, x, y, on_cuda)
                row = compare(reference, skipped, device, args.rounds, args.min_run_time)
                rows.append((f"{name} train step, {label}, rebuild skipped (diagnostic)", row))
        mapped = mapped_models[next(iter(mapped_models))]
        deployed = basisn.to_dense(mapped).eval()
        dense.eval()
        infer = compare(inference(dense, x), inference(deployed, x), device, args.rounds, args.min_run_time)
        # the same comparison between two identical dense models: how far from 1.000 noise alone moves a ratio
        twin_dense.eval()
        control = compare(inference(dense, x), inference(twin_dense, x), device, args.rounds, args.min_run_time)
        rows += [
            (f"{name} to_dense inference ({next(iter(mapped_models))})", infer),
            (f"{name} dense copy inference (noise floor)", control),
        ]
        for label, row in rows:
            print(
                f"{label:<58} {row['reference_s'] * 1e3:>9.2f}ms {row['candidate_s'] * 1e3:>9.2f}ms "
                f"{row['ratio']:>7.3f}  ({row['ratio_q1']:.3f}-{row['ratio_q3']:.3f}; "
                f"{row['ratio_min']:.3f}-{row['ratio_max']:.3f})"
            )
            results["cases"].append(dict(case=label, **row))

    if not args.skip_resnet50:
        resnet50 = torchvision.models.resnet50()
        seconds = []
        for _ in range(3):
            model = copy.deepcopy(resnet50)
            started = time.perf_counter()
            basisn.to_basisn(model, args.n_basis)
            seconds.append(time.perf_counter() - started)
        label = f"to_basisn(resnet50), n_basis={args.n_basis}"
        print(f"{label:<58} {statistics.median(seconds):>10.2f}s (median of 3)")
        results["to_basisn_resnet50_s"] = statistics.median(seconds)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
