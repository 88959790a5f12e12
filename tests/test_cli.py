"""`videodit generate` at its edges: every user error is one line on stderr with exit code 2, and nothing is written."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from mlflow import MlflowClient
from mlflow.tracking._model_registry import utils as registry_utils
from mlflow.tracking._tracking_service import utils as tracking_utils

from tiny_bundle import tiny_bundle
from videodit.cli import MAX_GUIDANCE, MAX_PROMPT_FILE_BYTES, MAX_PROMPTS, MAX_STEPS, main
from videodit.tracking.mlflow_store import default_tracking_uri

MODEL_URI = "models:/videodit-onnx@champion"
BLOCK_TORCH = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")

sys.meta_path.insert(0, NoTorch())
"""


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return tiny_bundle(tmp_path_factory).path


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty current folder, outside any project: a user error must leave it empty."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("VIDEODIT_PROJECT_DIR", raising=False)
    return cwd


@pytest.fixture
def mlflow_uris(monkeypatch):
    """main() points mlflow's process-wide tracking and registry URIs at the store; undo that after the test."""
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(name, "")  # records the original value, restored at teardown
        monkeypatch.delenv(name)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    return err.strip()


def register_bundle(project, bundle_dir) -> None:
    """The project's SQLite store with the bundle folder registered as videodit-onnx@champion."""
    store = default_tracking_uri(project)
    client = MlflowClient(store, store)
    client.create_registered_model("videodit-onnx")
    version = client.create_model_version("videodit-onnx", source=bundle_dir.as_uri())
    client.set_registered_model_alias("videodit-onnx", "champion", version.version)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "100000000"], f"argument --steps: must be a whole number from 1 to {MAX_STEPS}, got '100000000'"),
        (["--steps", "1e9"], f"argument --steps: must be a whole number from 1 to {MAX_STEPS}, got '1e9'"),
        (["--steps", "0"], f"argument --steps: must be a whole number from 1 to {MAX_STEPS}, got '0'"),
        (["--guidance", "1e39"], f"argument --guidance: must be a number from 0 to {MAX_GUIDANCE:g}, got '1e39'"),
        (["--guidance", "nan"], f"argument --guidance: must be a number from 0 to {MAX_GUIDANCE:g}, got 'nan'"),
        (["--guidance", "-1"], f"argument --guidance: must be a number from 0 to {MAX_GUIDANCE:g}, got '-1'"),
        (["--seed", "-1"], "argument --seed: must be a whole number >= 0, got '-1'"),
        (["--frames", "1e9"], "argument --frames: invalid int value: '1e9'"),
        (["--size", "big"], "argument --size: size 'big' is not WIDTHxHEIGHT, e.g. 64x64"),
        (["-o", "\udcff.mp4"], "argument -o/--output: not valid UTF-8 (an undecodable byte at character 1)"),
    ],
)
def test_bad_option_values_are_refused_naming_the_option(workdir, capsys, args, message):
    assert main(["generate", "a red circle", *args]) == 2
    assert one_line_error(capsys) == f"videodit: error: {message}"
    assert list(workdir.iterdir()) == []


def test_invalid_utf8_prompt_is_refused_naming_the_argument(workdir, capsys):
    assert main(["generate", "a red \udcff circle"]) == 2
    expected = "videodit: error: argument prompt: not valid UTF-8 (an undecodable byte at character 7)"
    assert one_line_error(capsys) == expected


def test_invalid_utf8_bytes_in_argv_end_without_a_traceback(bundle_dir):
    """The real thing: bytes that are not UTF-8 on the command line, in a process where torch cannot load."""
    script = BLOCK_TORCH + "from videodit.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    argv = [sys.executable, "-c", script, "generate", b"a red \xff circle", "--model", str(bundle_dir)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "videodit: error: argument prompt: not valid UTF-8 (an undecodable byte at character 7)"
    ]


def test_generate_runs_where_torch_cannot_be_imported(bundle_dir, tmp_path):
    script = BLOCK_TORCH + textwrap.dedent("""
        from videodit.cli import main
        code = main(sys.argv[1:])
        assert "torch" not in sys.modules
        sys.exit(code)
    """)
    out = tmp_path / "clip.mp4"
    argv = [sys.executable, "-c", script, "generate", "a red circle", "-o", str(out), "--model", str(bundle_dir),
            "--steps", "1"]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0


def test_output_under_a_file_is_refused_naming_the_path(workdir, tmp_path, capsys):
    a_file = tmp_path / "hostname"
    a_file.write_text("not a folder\n")
    assert main(["generate", "a red circle", "-o", str(a_file / "out.mp4")]) == 2
    assert one_line_error(capsys) == f"videodit: error: cannot write into {a_file}: {a_file} is not a folder"
    assert a_file.read_text() == "not a folder\n"


def test_batch_output_below_a_file_is_refused(workdir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    assert main(["generate", "--batch", str(prompts), "-o", str(prompts / "videos")]) == 2
    expected = f"cannot write into {prompts / 'videos'}: {prompts} is not a folder"
    assert one_line_error(capsys) == f"videodit: error: {expected}"


def test_batch_file_that_is_not_utf8_is_named(workdir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"a red circle\na bl\xffue square\n")
    assert main(["generate", "--batch", str(prompts)]) == 2
    assert one_line_error(capsys) == f"videodit: error: prompt file {prompts} is not UTF-8: byte 0xff at offset 17"


def test_batch_file_with_too_many_prompts_is_refused(workdir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n" * (MAX_PROMPTS + 1))
    assert main(["generate", "--batch", str(prompts)]) == 2
    expected = f"prompt file {prompts} holds {MAX_PROMPTS + 1} prompts, over the limit of {MAX_PROMPTS} per run"
    assert one_line_error(capsys) == f"videodit: error: {expected}"


def test_oversized_batch_file_is_refused_unread(workdir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    with prompts.open("wb") as file:
        file.truncate(MAX_PROMPT_FILE_BYTES + 1)
    assert main(["generate", "--batch", str(prompts)]) == 2
    expected = f"prompt file {prompts} is {MAX_PROMPT_FILE_BYTES + 1} bytes, over the limit of {MAX_PROMPT_FILE_BYTES}"
    assert one_line_error(capsys) == f"videodit: error: {expected}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frames", "100000"], "frames=100000 is not supported by this model: use one of 1, 5, 9, ... 45 (steps of 4) "
                                 "in one window, or any count up to 960 (made window by window beyond 9)"),
        (["--size", "99999999x32"], "width=99999999 is not supported by this model: use a multiple of 8 from 8 to 192"),
    ],
)
def test_sizes_beyond_the_bundle_are_refused(workdir, bundle_dir, capsys, args, message):
    assert main(["generate", "a red circle", "--model", str(bundle_dir), *args]) == 2
    assert one_line_error(capsys) == f"videodit: error: {message}"
    assert list(workdir.iterdir()) == []


def test_a_size_that_was_not_trained_is_one_warning_line_and_still_generates(bundle_dir, tmp_path, capsys):
    out = tmp_path / "wide.mp4"
    assert main(["generate", "a red circle", "-o", str(out), "--model", str(bundle_dir), "--steps", "1", "--size", "40x32"]) == 0
    warning, wrote = capsys.readouterr().err.splitlines(), out.is_file()
    assert len(warning) == 1 and warning[0].startswith("videodit: warning: 40x32 × 9 frames was not trained (trained: 32x32 × 9 frames,")
    assert warning[0].endswith("expect lower quality") and wrote


def test_output_that_is_a_folder_gets_the_files_inside_it(bundle_dir, tmp_path):
    folder = tmp_path / "parent" / "videos"
    folder.mkdir(parents=True)
    argv = ["generate", "a red circle", "-o", str(folder), "--model", str(bundle_dir), "--steps", "1"]
    assert main(argv) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["contact_sheet.png", "manifest.json", "out.gif", "out.mp4"]
    assert [p.name for p in folder.parent.iterdir()] == ["videos"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["videos"][0]["mp4"] == "out.mp4"
    assert "prompt_rewriter" not in manifest and "given_prompt" not in manifest["videos"][0]  # off by default


def test_a_prompt_rewriter_rewrites_before_generation_and_the_manifest_records_it(bundle_dir, tmp_path):
    spec = "videodit.generation.prompt_rewriter:expand_shapes_prompt"
    argv = ["generate", "big red square right", "-o", str(tmp_path / "out.mp4"), "--model", str(bundle_dir), "--steps", "1"]
    assert main([*argv, "--prompt-rewriter", spec]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["prompt_rewriter"] == spec
    assert (manifest["videos"][0]["given_prompt"], manifest["videos"][0]["prompt"]) == ("big red square right", "a large red square moves right")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "prompt rewriter 'no_colon': expected module:function"),
        ("videodit.no_such_module:f", "prompt rewriter 'videodit.no_such_module:f': cannot import videodit.no_such_module"),
        ("json:no_such_function", "prompt rewriter 'json:no_such_function': json has no function no_such_function"),
        ("json:loads", "prompt rewriter 'json:loads' returned 1 for '1', not a non-empty string"),
    ],
)
def test_a_prompt_rewriter_that_fails_is_one_line_naming_it(workdir, capsys, spec, message):
    assert main(["generate", "1", "--prompt-rewriter", spec]) == 2
    assert one_line_error(capsys).startswith(f"videodit: error: {message}")
    assert list(workdir.iterdir()) == []


def test_model_uri_resolves_in_the_project_store_without_a_stray_store(
    workdir, bundle_dir, tmp_path, monkeypatch, mlflow_uris
):
    project = tmp_path / "project"
    project.mkdir()
    register_bundle(project, bundle_dir)
    monkeypatch.setenv("VIDEODIT_PROJECT_DIR", str(project))
    out = tmp_path / "out" / "clip.mp4"
    assert main(["generate", "a red circle", "-o", str(out), "--model", MODEL_URI, "--steps", "1"]) == 0
    assert out.stat().st_size > 0
    assert list(workdir.iterdir()) == []


def test_missing_project_store_says_where_it_looked(workdir, capsys):
    assert main(["generate", "a red circle"]) == 2
    expected = (f"videodit: error: cannot resolve {MODEL_URI}: tracking store sqlite:///{workdir / 'mlflow.db'} does "
                "not exist (the current folder, as VIDEODIT_PROJECT_DIR is unset); run the pipeline there, or set "
                "VIDEODIT_PROJECT_DIR to the project folder or MLFLOW_TRACKING_URI to a tracking store")  # fmt: skip
    assert one_line_error(capsys) == expected
    assert list(workdir.iterdir()) == []


def test_missing_store_named_by_the_environment_is_not_created(workdir, tmp_path, monkeypatch, capsys):
    store = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    assert main(["generate", "a red circle"]) == 2
    assert f"tracking store {store} does not exist (from MLFLOW_TRACKING_URI)" in one_line_error(capsys)
    assert not (tmp_path / "elsewhere.db").exists()
    assert list(workdir.iterdir()) == []
