"""The package's import graph: every import goes to the importer's layer or a lower one, and there are no cycles.

The graph is read from the source (`ast`), every `import` of a vos module counted wherever it stands (module
level or inside a function), except under `if TYPE_CHECKING:`. `from a.b import c` is an arrow to the module
`a.b.c` when there is one, else to `a.b`.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"vos": "vos", "streams": "vos.streams", "memory": "vos.memory", "configs": "vos.configs"}
"""Source folder -> the package it installs as (pyproject.toml's package-dir)."""

LAYERS: list[tuple[str, list[str]]] = [
    # lowest first; a name stands for the module and everything under it, the longest name that fits decides
    ("foundations", ["vos.errors", "vos.boxes", "vos.lazy", "vos.configs", "vos.config", "vos.streams.redact",
                     "vos.tracking.prompts", "vos.http_service"]),
    ("frames and memory", ["vos.device", "vos.streams.sources", "vos.streams.messages", "vos.streams.label_map",
                           "vos.streams.overlay", "vos.streams.prompt_inbox", "vos.tracking.transforms",
                           "vos.tracking.postprocess", "vos.memory"]),
    ("model", ["vos.modeling"]),
    ("loading", ["vos.checkpoints", "vos.build", "vos.export", "vos.detection"]),
    ("tracking", ["vos.tracking", "vos.image_predictor", "vos.segment"]),
    ("sinks", ["vos.streams.sinks", "vos.streams.results", "vos.streams", "vos.segment.files", "vos.annotation"]),
    ("viewer and engine settings", ["vos.viewer", "vos.engine.metrics", "vos.engine.settings"]),
    ("engine", ["vos.engine"]),
    ("distributed", ["vos.distributed"]),
    ("evaluation", ["vos.evaluation"]),
    ("command line", ["vos.cli", "vos.doctor"]),
]  # fmt: skip
API = "vos"
"""The package itself (`import vos`, lazy names) sits above every layer."""


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(REPO / folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING"


def imports(path: Path, known: set[str]) -> set[str]:
    """The vos modules `path` imports at run time."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.split(".")[0] == "vos")
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and (child.module or "").split(".")[0] == "vos":
                for alias in child.names:
                    full = f"{child.module}.{alias.name}"
                    found.add(full if full in known else child.module)
            elif isinstance(child, ast.ImportFrom) and child.level:
                raise AssertionError(f"{path}: relative import; vos uses absolute imports only")
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) - {name} for name, path in found.items()}


def layer(module: str) -> int:
    """The index of the module's layer (len(LAYERS) for the package itself)."""
    if module == API:
        return len(LAYERS)
    fits = [(len(name), i) for i, (_, names) in enumerate(LAYERS) for name in names
            if module == name or module.startswith(name + ".")]  # fmt: skip
    assert fits, f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}"
    return max(fits)[1]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_every_module_has_a_layer():
    for module in modules():
        layer(module)


def test_no_import_goes_up_a_layer():
    graph = import_graph()
    upward = [
        f"{a} ({LAYERS[layer(a)][0]}) imports {b} ({LAYERS[layer(b)][0] if layer(b) < len(LAYERS) else 'the package'})"
        for a, targets in sorted(graph.items())
        for b in sorted(targets)
        if layer(b) > layer(a)
    ]
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_checks_can_fail():
    """The checks find what they look for: an upward arrow and a cycle in made-up graphs."""
    assert layer("vos.cli.track") > layer("vos.engine.engine") > layer("vos.tracking.tracker") > layer("vos.modeling.sam2")
    assert layer("vos.tracking.prompts") < layer("vos.streams.messages") < layer("vos.tracking.tracker")
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    graph = import_graph()
    assert "vos.tracking.tracker" in graph["vos.engine.engine"]  # function-level imports count too:
    assert "vos.distributed.serve" in graph["vos.cli.track"]
