"""The import structure and the one home of each concept, read from the code itself (ast).

    python -m pytest -q tests/test_layout.py

Layers, from the bottom: the data, model and training modules; the run's and the sweep's helpers;
the scripts (main.py, dataloader.py, refine_llm.py, experiments.py, compare.py) with the sweep runner
and its report; bench/ and tests/ on top. Nothing imports upwards and no modules import each other
in a circle.
"""
import ast
import graphlib
import importlib.metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The data, model and training layers, and the helpers below them.
LOWER = {"catalog", "utils", "significance", "metrics", "model", "sampler", "splits", "training", "devices",
         "run_files", "entry", "checkpoint", "cli", "download", "http_fetch", "preprocess"}
# Scripts, the sweep and its report, bench and tests: what no lower module may import.
UPPER = {"main", "dataloader", "refine_llm", "experiments", "compare", "sweep", "sweep_ray", "run_process", "report",
         "bench", "tests", "conftest", "helpers"}


def project_modules() -> dict[str, Path]:
    """{module name: file} of the repository's own code (tests left out): top-level, llm/ and bench/."""
    found = {path.stem: path for path in ROOT.glob("*.py")}
    for package in ("llm", "bench"):
        found.update({f"{package}.{path.stem}": path for path in (ROOT / package).glob("*.py")
                      if path.stem != "__init__"})
    return found


def imported(path: Path, known) -> set[str]:
    """The project modules `path` imports anywhere in it (at the top or inside a function)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    # A package's module, or the top-level name of what was imported from it (bench.toy -> bench.toy).
    return {name for name in names if name in known} | {name.split(".")[0] for name in names
                                                       if name.split(".")[0] in UPPER}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported(path, modules) - {name} for name, path in modules.items()}


def test_no_import_circle():
    graph = import_graph()
    assert {"splits", "run_files", "training"} <= graph.keys()  # the reader sees the modules at all
    assert "run_files" in graph["report"] and "metrics" in graph["main"]  # and their imports
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import circle: {' -> '.join(error.args[1])}")


def test_lower_layers_import_nothing_above_them():
    graph = import_graph()
    upward = {name: sorted(graph[name] & UPPER | {module for module in graph[name] if module.startswith("bench.")})
              for name in LOWER}
    assert {name: found for name, found in upward.items() if found} == {}


def test_llm_stage_imports_no_script():
    graph = import_graph()
    found = {name: sorted(graph[name] & (UPPER - {"bench", "tests"})) for name in graph if name.startswith("llm.")}
    assert {name: imports for name, imports in found.items() if imports} == {}


def test_bench_imports_no_test_module():
    graph = import_graph()
    assert {name: sorted(graph[name] & {"tests", "conftest", "helpers"}) for name in graph
            if name.startswith("bench.") and graph[name] & {"tests", "conftest", "helpers"}} == {}
    assert not any("pytest" in {alias.name for node in ast.walk(ast.parse(path.read_text()))
                                if isinstance(node, ast.Import) for alias in node.names}
                   for name, path in project_modules().items() if name.startswith("bench."))


def test_no_module_shadows_an_installed_package():
    """The repository root is on sys.path: a module named like an installed package would hide it."""
    installed = set(importlib.metadata.packages_distributions())
    assert "torch" in installed  # the lookup works here
    assert sorted({path.stem for path in ROOT.glob("*.py")} & installed) == []


def string_constants(path: Path) -> set[str]:
    """Every string literal of the module's code (docstrings are expressions too, but name, not define)."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings}


@pytest.mark.parametrize("name", [".last.pt", ".test.json", ".test_users.csv", "_not_early_stop.pt",
                                  "experiments.json"])
def test_each_run_file_name_has_one_home(name):
    """A run's file names and the sweep manifest's are spelled in run_files.py's code only (messages and
    help texts, which hold spaces, may name them)."""
    spelled = sorted(module for module, path in project_modules().items() if not module.startswith("bench.")
                     and any(name in value and not any(char.isspace() for char in value)
                             for value in string_constants(path)))
    assert spelled == ["run_files"]


def test_the_train_split_rule_has_one_home():
    """`"train_augment" if augment else "train_original"` is decided in catalog.py only."""
    def decides(path):
        return any(isinstance(node, ast.IfExp) and {getattr(node.body, "value", None),
                                                    getattr(node.orelse, "value", None)}
                   == {"train_augment", "train_original"} for node in ast.walk(ast.parse(path.read_text())))
    assert sorted(module for module, path in project_modules().items() if decides(path)) == ["catalog"]


@pytest.mark.parametrize("function", ["sha256_of", "load_splits", "read_split", "masked_topk", "evaluate",
                                      "read_manifest", "run_status"])
def test_each_helper_is_defined_once(function):
    modules = project_modules()
    defined = sorted(name for name, path in modules.items()
                     if any(isinstance(node, ast.FunctionDef) and node.name == function
                            for node in ast.parse(path.read_text()).body))
    assert len(defined) == 1, defined
