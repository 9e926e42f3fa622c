"""The import graph keeps to `mailrelay.layers.LAYERS`: nothing imports upwards or sideways,
every package has a layer, and no modules import each other in a circle."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import mailrelay
from mailrelay.layers import LAYERS, layer_of

SOURCE = Path(mailrelay.__file__).parent


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, e.g. mailrelay.spool.writer
    target: str  # imported module (or the name imported from a package)
    line: int


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(root: Path) -> list[Edge]:
    """Every import of a `root` module from another of its modules, anywhere in the file."""
    package = root.name
    modules = {module_name(root, p) for p in root.rglob("*.py")}
    edges = []
    for path in sorted(root.rglob("*.py")):
        name = module_name(root, path)
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
                # `from pkg import mod` imports the module pkg.mod when there is one
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            else:
                continue
            edges += [Edge(name, t, node.lineno) for t in targets
                      if t.split(".")[0] == package and t != name]
    return edges


def unit(module: str) -> str:
    """The layered unit of a module: its top-level package, or itself when top-level."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def against_layers(edges: list[Edge]) -> list[str]:
    found = []
    for e in edges:
        a, b = unit(e.source), unit(e.target)
        if a == b or b == "__init__":
            continue
        la, lb = layer_of(a), layer_of(b)
        if la is None or lb is None:
            found.append(f"{e.source}:{e.line}: {a if la is None else b} has no layer in mailrelay.layers")
        elif lb >= la:
            where = "the same layer as" if la == lb else "a higher layer than"
            found.append(f"{e.source}:{e.line} imports {e.target} ({b} is on {where} {a})")
    return found


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_package_has_a_layer() -> None:
    units = {unit(module_name(SOURCE, p)) for p in SOURCE.rglob("*.py")} - {"__init__"}
    assert sorted(u for u in units if layer_of(u) is None) == []
    named = [n for layer in LAYERS for n in layer]
    assert len(named) == len(set(named)), "a package is named on two layers"


def test_no_import_goes_up_or_sideways() -> None:
    edges = imports(SOURCE)
    assert len(edges) > 300  # the parser sees the real graph
    assert against_layers(edges) == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    assert cycles(imports(SOURCE)) == []


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checks_find_an_upward_import_and_a_circle(tmp_path: Path) -> None:
    root = write(tmp_path / "mailrelay", {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/status.py": "from mailrelay.spool import leases\n",  # core is below spool
        "spool/__init__.py": "",
        "spool/leases.py": "def claim():\n    from . import writer\n",
        "spool/writer.py": "from mailrelay.spool.leases import claim\n",
        "submission/policy.py": "from mailrelay.inbound import receive\n",  # same layer
        "inbound/receive.py": "",
        "nowhere/thing.py": "from mailrelay.core import status\n",
    })
    edges = imports(root)
    assert against_layers(edges) == [
        "mailrelay.core.status:1 imports mailrelay.spool.leases (spool is on a higher layer than core)",
        "mailrelay.nowhere.thing:1: nowhere has no layer in mailrelay.layers",
        "mailrelay.submission.policy:1 imports mailrelay.inbound.receive "
        "(inbound is on the same layer as submission)",
    ]
    assert cycles(edges) == [["mailrelay.spool.leases", "mailrelay.spool.writer"]]
