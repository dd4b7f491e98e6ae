"""Components know nothing above them: no module of core, trl, verify, eval, data or baselines imports the recipes or
the embedded task, not even inside a function, and no two modules import each other, even through others or lazily.
Tests share code through tests/helpers.py, never by importing another test module or a conftest."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "prefix_rft"
COMPONENTS = ("core", "trl", "verify", "eval", "data", "baselines")
ABOVE = ("prefix_rft.recipes", "prefix_rft.tasks")


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` statement in `path` names, wherever the statement stands."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_walk_sees_function_local_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from prefix_rft.tasks import make_rows\n    import prefix_rft.recipes.toy\n")
    assert {"prefix_rft.tasks", "prefix_rft.tasks.make_rows", "prefix_rft.recipes.toy"} <= imported_modules(source)


@pytest.mark.parametrize("component", COMPONENTS)
def test_component_does_not_import_recipes_or_the_task(component):
    offenders = {
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in (PACKAGE / component).rglob("*.py")
        for name in imported_modules(path)
        if name.startswith(ABOVE) or name in ("prefix_rft.recipes", "prefix_rft.tasks")
    }
    assert not offenders, sorted(offenders)


def import_graph(package: Path) -> dict[str, set[str]]:
    """module -> the modules of `package` it imports anywhere in its file, each name resolved to the deepest module
    it names (`from p.recipes import toy` is p.recipes.toy; `from p.recipes.toy import f` too; `from p import f` is
    p's __init__). Parent packages a dotted import runs first are left out: they are not an edge the module chose."""
    modules = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for module, path in modules.items():
        graph[module] = set()
        for name in imported_modules(path):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                graph[module].add(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of `graph` as the path [a, b, ..., a] (depth first from the sorted modules), or None if it has none."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        for imported in sorted(graph[module]):
            if cycle := visit(imported, [*path, module]):
                return cycle
        done.add(module)
        return None

    return next((cycle for module in sorted(graph) if (cycle := visit(module, []))), None)


def test_the_import_graph_resolves_submodules_and_finds_a_lazy_cycle(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import f\n")
    (package / "b.py").write_text("def f():\n    from pkg import a\n")  # lazy, as a cycle is usually dodged
    (package / "c.py").write_text("import pkg.a\n")
    graph = import_graph(package)
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg", "pkg.a"}, "pkg.c": {"pkg.a"}}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]
    (package / "b.py").write_text("def f():\n    pass\n")
    assert find_cycle(import_graph(package)) is None


def test_no_two_modules_import_each_other():
    cycle = find_cycle(import_graph(PACKAGE))
    assert cycle is None, " imports ".join(cycle)


def test_no_source_file_is_over_400_lines():
    long = {
        str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long, long


def imports_a_test_module(name: str) -> bool:
    """`name` (as `imported_modules` gives it) is a test module or a conftest, which tests share only via helpers."""
    return any(part.startswith("test_") or part == "conftest" for part in name.split("."))


def test_the_test_module_check_sees_relative_and_absolute_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from .test_trainer import f\nfrom tests.trl.conftest import g\nfrom tests.helpers import h\n")
    flagged = {name for name in imported_modules(source) if imports_a_test_module(name)}
    assert flagged == {"test_trainer", "test_trainer.f", "tests.trl.conftest", "tests.trl.conftest.g"}


def test_tests_share_code_through_helpers_not_other_test_modules():
    tests = Path(__file__).resolve().parent
    offenders = {
        f"{path.relative_to(tests)}: {name}"
        for path in tests.rglob("*.py")
        for name in imported_modules(path)
        if imports_a_test_module(name)
    }
    assert not offenders, sorted(offenders)


@pytest.mark.parametrize("package", ["core", "trl"])
def test_each_module_has_a_test_file_of_its_name(package):
    tests = Path(__file__).resolve().parent / package
    modules = {p.stem for p in (PACKAGE / package).glob("*.py") if p.stem != "__init__"}
    assert {"prefix", "trainer"} & modules
    assert sorted(m for m in modules if not (tests / f"test_{m}.py").exists()) == []
