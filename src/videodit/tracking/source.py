"""The code a model is made by, read from the `videodit` source itself (with `ast`: nothing is imported or run).

From entry modules, every import that names a `videodit` module is followed, transitively, with the packages on
the way (importing `a.b.c` runs `a`, `a.b` and `a.b.c`), imports inside functions included. That set of files is
- the code part of a model's fingerprint (`code_version`): their bytes hashed, so an edit to any of them is a new
  model (and Dagster shows the asset stale), while an edit to a module the run never imports is not; the package's
  `__init__`, which holds `__version__`, is always among them;
- what a logged model needs besides its weights: the package folder (`code_paths`, which MLflow puts on `sys.path`
  when it loads the model) and the installed distributions those files import (`pip_requirements`, pinned).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import sys
from pathlib import Path

from videodit.tracking.registry import fingerprint

PACKAGE = "videodit"
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds the package


def module_file(module: str, root: Path = SOURCE_ROOT) -> Path | None:
    """The source of `module` under `root` (a package's `__init__.py`); None when it is no module (a name in one)."""
    path = root.joinpath(*module.split("."))
    return next((p for p in (path / "__init__.py", path.with_suffix(".py")) if p.is_file()), None)


def imported_names(path: Path, module: str) -> frozenset[str]:
    """Every name an import statement of `path`, the source of `module`, brings in: `a.b` for `import a.b`, `a` and
    `a.x` for `from a import x` (x may be a module), relative imports made absolute."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from ..x import y` in a.b.c is `from a.x import y`
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}".rstrip(".")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(names)


def modules_run_by(*modules: str, root: Path = SOURCE_ROOT) -> dict[str, Path]:
    """{name: source} of `modules` and of every `videodit` module importing them runs, directly or in turn."""
    missing = [m for m in modules if module_file(m, root) is None]
    if missing:
        raise ModuleNotFoundError(f"no source of {', '.join(missing)} under {root}")
    found: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        parts = todo.pop().split(".")
        for name in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
            path = None if parts[0] != PACKAGE or name in found else module_file(name, root)
            if path is not None:
                found[name] = path
                todo.extend(imported_names(path, name))
    return found


def code_version(*modules: str, root: Path = SOURCE_ROOT) -> str:
    """A short hash of the source of every `videodit` module importing `modules` runs, by module name (so the same
    code hashes the same wherever it is checked out)."""
    sources = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in modules_run_by(*modules, root=root).items()}
    return fingerprint(sources=sources)


def code_paths() -> list[str]:
    """What to log with a model whose pickle names `videodit` classes: the package folder."""
    return [str(SOURCE_ROOT / PACKAGE)]


def pip_requirements(*modules: str, root: Path = SOURCE_ROOT) -> list[str]:
    """`dist==version` of each installed distribution that the code importing `modules` imports (the standard
    library and `videodit` aside). Local version labels are dropped: `torch==2.13.0`, not `2.13.0+cpu`, which only
    the PyTorch index serves and which pins the CPU build."""
    tops = {n.split(".")[0] for m, path in modules_run_by(*modules, root=root).items() for n in imported_names(path, m)}
    providers = importlib.metadata.packages_distributions()
    dists = {dist for top in tops - set(sys.stdlib_module_names) - {PACKAGE} for dist in providers.get(top, ())}
    return sorted(f"{dist}=={importlib.metadata.version(dist).split('+')[0]}" for dist in dists)
