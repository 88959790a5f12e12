"""Dependencies point one way (STYLE.md), read from the source with `ast` (`videodit.tracking.source`), nothing imported.

Every `import` counts, at module level or inside a function. A layer's rule holds for its modules and for every
`videodit` module they import in turn (a package's `__init__` included), so a forbidden import cannot hide one
module away.
"""

from collections.abc import Callable
from pathlib import Path

from videodit.tracking.source import imported_names, modules_run_by

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")


IMPORTS = {_module_name(path): imported_names(path, _module_name(path)) for path in sorted((SRC / "videodit").rglob("*.py"))}


def within(name: str, *prefixes: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _executed_by(name: str) -> set[str]:
    """The videodit modules that importing `name` runs: each package on its path and the module itself."""
    parts = name.split(".")
    return {prefix for prefix in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if prefix in IMPORTS}


def reachable(module: str) -> set[str]:
    """`module` and every videodit module that importing it runs, directly or in turn."""
    return set(modules_run_by(module, root=SRC))


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


def test_models_import_only_models_and_the_sampler():
    # The sampler and the frame conditioning are numpy-only and import no videodit module.
    allowed = ("videodit.models", "videodit.sampling", "videodit.conditioning")
    assert violations("videodit.models", lambda name: within(name, "videodit") and not within(name, *allowed)) == []


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
