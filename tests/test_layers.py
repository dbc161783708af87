"""The import-linter contract that keeps the benchmark lab out of the deployed core lists the core's modules by name;
this keeps the list whole, so that a new runtime module cannot slip past it."""

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_the_core_contract_names_every_runtime_module_but_the_lab():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (core,) = [c for c in contracts if c.get("forbidden_modules") == ["runtime.lab"]]
    modules = {f"runtime.{p.stem if p.is_file() else p.name}" for p in (ROOT / "runtime").iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert set(core["source_modules"]) == modules - {"runtime.lab"}


def test_the_no_torch_contract_exempts_only_torch_backends_in_the_core():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (no_torch,) = [c for c in contracts if "torch" in c.get("forbidden_modules", [])]
    core = {line.split(" -> ")[0] for line in no_torch["ignore_imports"] if not line.startswith("runtime.lab.")}
    assert core == {"runtime.backends.torch_backend", "runtime.backends.aoti_backend", "runtime.backends.trt_engine",
                    "runtime.backends.executorch_backend"}


def test_every_shared_helper_sits_in_a_layer():
    """Issue 37: the helpers below the stages are each in the layers contract, so none can import upwards unseen."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [c for c in contracts if c.get("type") == "layers"]
    named = {m.strip() for layer in layers["layers"] for m in layer.split("|")}
    helpers = {f"resnet_edge.{p.stem}" for p in (ROOT / "resnet_edge").glob("*.py") if p.stem != "__init__"}
    assert helpers <= named, sorted(helpers - named)


def _cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycle_anywhere():
    """No module of the four packages reaches itself through its imports, lazy ones (inside functions) included."""
    import grimp

    made = grimp.ImportGraph()
    for a, b in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        made.add_import(importer=a, imported=b)
    assert _cycles(made) == [["p.a", "p.b", "p.c"]]  # the check finds a cycle where there is one
    assert not _cycles(grimp.build_graph("train", "export", "runtime", "resnet_edge"))
