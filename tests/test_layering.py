"""Dependencies point one way (STYLE.md), read from the source with `ast`, nothing imported.

Every `import` counts, at module level or inside a function. A layer's rule holds for its modules and for every
`videodit` module they import in turn (a package's `__init__` included), so a forbidden import cannot hide one
module away.
"""

import ast
from collections.abc import Callable
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")


def _imported_names(path: Path) -> frozenset[str]:
    """Every name an import statement of `path` brings in: `a.b` for `import a.b`, `a` and `a.x` for `from a import x`."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from ..x import y` in a.b.c is `from a.x import y`
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}".rstrip(".")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from package import module`
    return frozenset(names)


IMPORTS = {_module_name(path): _imported_names(path) for path in sorted((SRC / "videodit").rglob("*.py"))}


def within(name: str, *prefixes: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _executed_by(name: str) -> set[str]:
    """The videodit modules that importing `name` runs: each package on its path and the module itself."""
    parts = name.split(".")
    return {prefix for prefix in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if prefix in IMPORTS}


def reachable(module: str) -> set[str]:
    """`module` and every videodit module that importing it runs, directly or in turn."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        for found in _executed_by(todo.pop()) - seen:
            seen.add(found)
            todo.extend(IMPORTS[found])
    return seen


def violations(layer: str, forbidden: Callable[[str], bool]) -> list[str]:
    """'m imports x' for every forbidden x imported by a module of `layer` or by a videodit module it reaches."""
    found = set()
    for module in (m for m in IMPORTS if within(m, layer)):
        for runner in reachable(module):
            found.update(f"{runner} imports {name}" for name in IMPORTS[runner] if forbidden(name))
    return sorted(found)


def test_the_source_tree_is_read():
    assert {"videodit.models.dit", "videodit.evaluation.attributes", "videodit.generation.onnx_generator"} <= set(IMPORTS)
    assert "videodit.domain" in IMPORTS["videodit.evaluation.attributes"]
    assert within("videodit.models.vae.VAEConfig", "videodit.models") and not within("videodit.modelsx", "videodit.models")
    assert "torch" not in IMPORTS["videodit.generation.onnx_generator"]
    assert {"videodit.evaluation", "videodit.evaluation.contact_sheet"} <= reachable("videodit.generation.outputs")


def test_models_import_only_models():
    assert violations("videodit.models", lambda name: within(name, "videodit") and not within(name, "videodit.models")) == []


def test_evaluation_imports_no_training_generator_or_dagster():
    banned = ("videodit.training", "videodit.data.synthetic", "dagster", "dagster_project")
    assert violations("videodit.evaluation", lambda name: within(name, *banned)) == []


def test_generation_imports_no_torch_and_no_training():
    assert violations("videodit.generation", lambda name: within(name, "torch", "videodit.training")) == []


def test_nothing_in_the_library_imports_dagster():
    assert violations("videodit", lambda name: within(name, "dagster", "dagster_project")) == []


def test_packages_import_each_other_one_way():
    """No cycle between the library's packages (models, data, evaluation, training, …): the graph is a DAG."""
    package_of = {m: ".".join(m.split(".")[:2]) for m in IMPORTS}
    edges = {package: set() for package in package_of.values()}
    for module, names in IMPORTS.items():
        for name in names:
            for target in _executed_by(name):
                if package_of[target] not in (package_of[module], "videodit"):
                    edges[package_of[module]].add(package_of[target])
    remaining = edges  # Kahn's algorithm: drop the packages whose imports are all dropped; a cycle is what stays
    while ready := {package for package, targets in remaining.items() if not targets}:
        remaining = {package: targets - ready for package, targets in remaining.items() if package not in ready}
    assert remaining == {}, f"packages in or above an import cycle (package -> what it still imports): {remaining}"
