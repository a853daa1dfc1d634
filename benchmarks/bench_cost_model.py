"""Benchmark of the cost model: all the paper's networks x 3 schemes x 10 crossbar counts (target: < 2 s).

Shape extraction (building each model on the meta device + forward hooks) is timed separately from evaluation.
Evaluation is timed cold (fresh NetworkShapes, so the tiling and the reprogramming schedule tables are rebuilt)
and warm (the same objects again). Run:

    .venv/bin/python benchmarks/bench_cost_model.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from basisn.hardware import NetworkShapes, evaluate, preset
from basisn.hardware.cost import SCHEMES
from basisn.hardware.networks import PAPER_NETWORKS, paper_shapes

CROSSBARS = [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]


def fresh(shapes: NetworkShapes) -> NetworkShapes:
    """The same shapes without cached tables: a cold evaluation."""
    return NetworkShapes(shapes.name, shapes.input_size, shapes.layers, shapes.basis)


def evaluate_all(networks: list[NetworkShapes]) -> int:
    config = preset("default")
    calls = 0
    for shapes in networks:
        for n in CROSSBARS:
            for scheme in SCHEMES:
                evaluate(shapes, config, scheme, n)
                calls += 1
    return calls


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"python {platform.python_version()}, torch {torch.__version__}, {platform.machine()}, threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    paper_shapes("resnet18")  # warm torchvision imports, not part of the measurement

    shapes: dict[str, NetworkShapes] = {}

    def extract() -> None:
        for name in PAPER_NETWORKS:
            shapes[name] = paper_shapes(name)

    t_shapes = timed(extract, args.repeats)
    networks = list(shapes.values())
    cold = timed(lambda: evaluate_all([fresh(s) for s in networks]), args.repeats)
    warm = timed(lambda: evaluate_all(networks), args.repeats)
    calls = evaluate_all(networks)

    def line(label: str, times: list[float]) -> str:
        return f"{label:<44} median {statistics.median(times):.3f} s   min {min(times):.3f} s   ({args.repeats} runs)"

    print(f"{len(networks)} networks ({', '.join(shapes)}), {len(SCHEMES)} schemes, {len(CROSSBARS)} crossbar "
          f"counts = {calls} evaluations")  # fmt: skip
    print(line("shape extraction (build on meta + hooks)", t_shapes))
    print(line("evaluation, cold (tables rebuilt)", cold))
    print(line("evaluation, warm (tables cached)", warm))
    print(f"per evaluation, cold: {1e3 * statistics.median(cold) / calls:.2f} ms")


if __name__ == "__main__":
    main()
