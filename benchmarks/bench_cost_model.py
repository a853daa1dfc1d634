"""Benchmark of the cost model: all the paper's networks x every scheme x 10 crossbar counts (target: < 2 s), and
the evaluation part of the whole `basisn hw-eval` on the default params.yaml (target: < 2 s, issue 14).

Shape extraction (building each model on the meta device + forward hooks) is timed separately from evaluation.
Evaluation is timed cold (fresh NetworkShapes, so the tiling and the reprogramming schedule tables are rebuilt)
and warm (the same objects again). The hw-eval timing is `basisn.stages.hardware.run` (every table of hw-eval,
nothing written) on fresh shapes. Run:

    .venv/bin/python benchmarks/bench_cost_model.py [--repeats 5] [--params params.yaml]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from basisn.hardware import NetworkShapes, evaluate, preset
from basisn.hardware.cost import SCHEMES
from basisn.hardware.networks import PAPER_NETWORKS, paper_shapes
from basisn.hardware.settings import resolve_block
from basisn.stages.hardware import load_block, run

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
    parser.add_argument("--params", default="params.yaml", help="params file whose `hardware:` block hw-eval runs")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, torch {torch.__version__}, {platform.machine()}, threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")  # fmt: skip
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

    p, config, basis = resolve_block(load_block(Path(args.params)))
    nets = {name: shapes[name] if name in shapes else paper_shapes(name) for name in p["networks"]}
    result: dict = {}

    def hw_eval() -> None:
        result.update(run(p, config, basis, {name: fresh(s) for name, s in nets.items()}))

    cpu = []

    def hw_eval_cpu() -> None:
        start = time.process_time()
        hw_eval()
        cpu.append(time.process_time() - start)

    t_hw = timed(hw_eval_cpu, args.repeats)
    rows = sum(len(t) for t in result["tables"].values())
    print(f"hw-eval on {args.params}: {len(nets)} networks, {1 + len(p['compare_presets'])} presets, "
          f"{len(p['sweep'])} sweeps, {rows} table rows")  # fmt: skip
    print(line("hw-eval evaluation (report.run, cold)", t_hw))
    print(line("  the same, CPU time of this process", cpu))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
