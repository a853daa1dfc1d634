"""Where the rebuild of a basis-mapped model spends its time (forward + backward), part by part, single thread.

    python benchmarks/profile_rebuild.py [--models small_resnet cifar_resnet18] [--groups 1 4 8] [--reps 100]

Times the rebuild of all layers' weights written as plain autograd ops (the formulas before issue 17, kept in
tests/test_rebuild.py as the reference) in cumulative prefixes: part k = time(first k parts) - time(first k-1),
each forward + backward, median thread CPU time (`time.thread_time`, which other processes on a shared machine
do not inflate). Then the plain formulas against `basisn.layers.rebuild_layer_weights` (the fast path), alternating.
channels_last models, n = 64, random valid groups; the training step itself is benchmarks/bench_layers.py.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

import basisn
from basisn.layers import BasisConv2d, _segment_index, basis_layers, quantize, rebuild_layer_weights, straight_through
from basisn.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_rebuild import reference_rebuild  # noqa: E402

PARTS = [
    "torch.cat of all coefficients",
    "group mask multiply (G > 1)",
    "quantizer range (abs, amax, scatter_reduce, index)",
    "quantize + straight-through",
    "per-row scale (cat, index, multiply)",
    "basis quantize + the one matmul",
    "split / slice / view per layer + NHWC clone",
]


def plain_prefix(layers: list, parts: int) -> list[torch.Tensor]:
    """The first `parts` parts of the plain rebuild (tests/test_rebuild.py: reference_rebuild), as outputs."""
    first, bank = layers[0], layers[0].bank
    coefs = torch.cat([layer.coef.reshape(-1, bank.n_basis) for layer in layers])
    if parts > 1 and bank.groups > 1:
        segment_group = torch.cat([layer.segment_group.reshape(-1) for layer in layers])
        vector_group = torch.arange(bank.n_basis) // bank.group_size
        coefs = coefs * (vector_group[None, :] == segment_group[:, None]).to(coefs.dtype)
    if parts <= 2:
        return [coefs]
    row_of_segment, _ = _segment_index(layers, coefs.device)
    n_rows = sum(layer.out_rows for layer in layers)
    largest = coefs.detach().abs().amax(dim=1)
    max_abs = torch.zeros(n_rows).scatter_reduce(0, row_of_segment, largest, reduce="amax")[row_of_segment, None]
    if parts == 3:
        return [coefs]
    coefs = straight_through(coefs, quantize(coefs, first.coef_bits, first.coef_quant, max_abs))
    if parts == 4:
        return [coefs]
    coefs = coefs * torch.cat([layer.scale for layer in layers])[row_of_segment][:, None]
    if parts == 5:
        return [coefs]
    segments = coefs @ bank.quantized()
    if parts == 6:
        return [segments]
    weights = []
    for layer, part in zip(layers, segments.split([layer.out_rows * layer.segments for layer in layers])):
        rows = part.view(layer.out_rows, -1)[:, : layer.row_len].unflatten(1, layer.weight_shape[1:])
        nhwc = isinstance(layer, BasisConv2d) and layer.channels_last
        weights.append(rows.clone(memory_format=torch.channels_last) if nhwc else rows)
    return weights


def forward_backward(fn):
    def run() -> None:
        outputs = fn()
        torch.autograd.backward(outputs, [torch.ones_like(o) for o in outputs])

    return run


def cpu_ms(fn, reps: int) -> list[float]:
    fn()
    times = []
    for _ in range(reps):
        started = time.thread_time()
        fn()
        times.append((time.thread_time() - started) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["small_resnet", "cifar_resnet18"])
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--reps", type=int, default=100, help="repetitions (cifar_resnet18: a tenth)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.models:
        shape, classes = ((1, 28, 28), 10) if name == "small_resnet" else ((3, 32, 32), 100)
        dense = build_model(name, classes, shape[0])
        reps = args.reps if name == "small_resnet" else max(3, args.reps // 10)
        for groups in args.groups:
            torch.manual_seed(0)
            model, _ = basisn.to_basisn(copy.deepcopy(dense), 64, groups=groups, init="random")
            for _, layer in basis_layers(model):
                if layer.segment_group is not None:
                    layer.segment_group.copy_(torch.randint(0, groups, layer.segment_group.shape))
            layers = model.to(memory_format=torch.channels_last).basisn_bank.layers
            prefix = [0.0]
            for parts in range(1, len(PARTS) + 1):
                prefix.append(
                    statistics.median(cpu_ms(forward_backward(lambda p=parts, ls=layers: plain_prefix(ls, p)), reps))
                )
            print(f"{name}, G={groups}: plain rebuild forward+backward {prefix[-1]:.3f} ms (1 thread, CPU time)")
            for k, label in enumerate(PARTS, start=1):
                print(f"    {label:<52} {prefix[k] - prefix[k - 1]:8.3f} ms")
            plain_run = forward_backward(lambda ls=layers: reference_rebuild(ls))
            fast_run = forward_backward(lambda ls=layers: rebuild_layer_weights(ls))
            plain, fast = [], []
            for _ in range(reps):
                plain += cpu_ms(plain_run, 1)
                fast += cpu_ms(fast_run, 1)
            print(
                f"    plain vs fast (alternating, median / min): {statistics.median(plain):.3f} / {min(plain):.3f} ms"
                f" -> {statistics.median(fast):.3f} / {min(fast):.3f} ms"
            )


if __name__ == "__main__":
    main()
