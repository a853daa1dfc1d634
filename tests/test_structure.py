"""The package's shape, read from its source: imports run one way (no circle, the library imports no stage, no
module imports another's private name), every DVC stage's command lives in basisn/stages/<stage>.py, and no
function is longer than a screen and a half (80 lines)."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from basisn.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "basisn"
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> list[tuple[str, str | None]]:
    """(imported module, imported name or None) of every import statement in a module, at any depth (imports
    inside functions count: they are arrows all the same). `from pkg import mod` is an arrow to pkg.mod."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule, None) if submodule in MODULES else (base, alias.name))
    return [(module, imported) for module, imported in found if module == "basisn" or module.startswith("basisn.")]


GRAPH = {name: sorted({module for module, _ in imports(name) if module in MODULES} - {name}) for name in MODULES}


def cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One import circle of the graph (as the list of modules around it), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for successor in graph.get(node, []):
            if state.get(successor) == 1:
                return path[path.index(successor) :] + [successor]
            if successor not in state and (found := visit(successor)):
                return found
        state[node] = 2
        path.pop()
        return None

    for start in graph:
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_cycle_finder_finds_a_circle_and_accepts_a_tree():
    assert cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": []}) == ["a", "b", "c", "a"]
    assert cycle({"a": ["b", "c"], "b": ["c"], "c": []}) is None


def test_no_import_circle_in_the_package():
    assert cycle(GRAPH) is None, " -> ".join(cycle(GRAPH) or [])


def test_no_module_imports_another_modules_private_name():
    private = [
        f"{name} imports {module}.{imported}"
        for name in MODULES
        for module, imported in imports(name)
        if imported and imported.startswith("_") and not imported.startswith("__")
    ]
    assert not private, private


def test_the_library_imports_no_stage():
    """Stages sit on top: only they and the command router (cli) may import basisn.stages."""
    upward = [
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        if not name.startswith("basisn.stages") and name != "basisn.cli"
        for target in targets
        if target.startswith("basisn.stages")
    ]
    assert not upward, upward
    assert all(not target.startswith("basisn.stages") for target in GRAPH["basisn.params"])


def test_no_function_in_the_package_is_over_80_lines():
    long = [
        f"{module_name(path)}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for path in MODULES.values()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, long


def test_every_dvc_stage_command_lives_in_its_stage_module():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage, spec in stages.items():
        words = " ".join(spec["cmd"].split()).split()
        assert words[0] == "basisn", (stage, spec["cmd"])
        module, function, _ = COMMANDS[words[1]]
        expected = "notebook" if stage.startswith("nb_") else stage
        assert (module, function) == (f"basisn.stages.{expected}", "main"), (stage, module)
        assert (PACKAGE / "stages" / f"{expected}.py").is_file()
    readme = (ROOT / "README.md").read_text()
    for stage in stages:
        if not stage.startswith("nb_"):
            assert f"| `{stage}` | `basisn " in readme and f"`basisn/stages/{stage}.py`" in readme, stage
