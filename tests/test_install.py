"""The install resolves DVC's and Dagster's antlr4 conflict in Dagster's favour; both must still work."""

import subprocess
import sys
from importlib.metadata import version

from dagster import AssetSelection

from dagster_project.definitions import defs


def test_antlr_runtime_is_the_one_dagster_needs():
    assert version("antlr4-python3-runtime").startswith("4.13")


def test_asset_selection_strings_parse_and_resolve():
    graph = defs.resolve_asset_graph()
    everything = AssetSelection.from_string("*").resolve(graph)
    assert {k.path[0] for k in everything} >= {"raw_videos", "video_metadata", "validated_clips", "training_clips"}
    downstream = AssetSelection.from_string('key:"validated_clips"+').resolve(graph)
    assert {k.path[0] for k in downstream} >= {"validated_clips", "training_clips"}
    assert "raw_videos" not in {k.path[0] for k in downstream}


def test_dagster_cli_accepts_a_star_selection():
    # With the 4.9 runtime this crashes inside the generated parser with `TypeError: ord()`.
    out = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "list", "-m", "dagster_project.definitions", "--select", "*"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "training_clips" in out.stdout and "raw_videos" in out.stdout


def test_the_local_instance_config_turns_run_monitoring_on_and_telemetry_off(tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    from dagster import DagsterInstance

    shutil.copy(Path(__file__).resolve().parents[1] / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with DagsterInstance.get() as instance:
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds == 86400
        assert not instance.telemetry_enabled
