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
