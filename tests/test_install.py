"""The install resolves DVC's and Dagster's antlr4 conflict in Dagster's favour; both must still work."""

import json
import subprocess
import sys
from pathlib import Path
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


def test_dg_loads_the_defs_folder_and_accepts_a_star_selection():
    # With the 4.9 runtime this crashes inside the generated parser with `TypeError: ord()`.
    dg = Path(sys.executable).parent / "dg"
    out = subprocess.run(
        [str(dg), "list", "defs", "--json", "--assets", "*"], capture_output=True, text=True, timeout=180,
        cwd=Path(__file__).parents[1],
    )
    assert out.returncode == 0, out.stderr[-2000:]
    listed = {a["asset_key"]: a["group_name"] for a in json.loads(out.stdout)["assets"]}
    assert listed == {k.to_user_string(): defs.resolve_assets_def(k).group_names_by_key[k] for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert set(listed.values()) == {"ingestion", "validation", "captioning", "curation", "training", "evaluation", "serving"}


def test_the_defs_folder_holds_jobs_schedules_sensors_resources_and_the_executor():
    assert {j.name for j in defs.jobs} == {"ingestion_job", "training_job", "retraining_job", "full_pipeline"}
    assert [s.name for s in defs.schedules] == ["weekly_retraining"] and [s.name for s in defs.sensors] == ["retrain_on_new_data"]
    assert set(defs.resources) == {"workspace", "dvc", "mlflow_tracking"}
    assert defs.executor.name == "in_process"


def test_the_local_instance_config_turns_run_monitoring_on_and_telemetry_off(tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    from dagster import DagsterInstance

    shutil.copy(Path(__file__).resolve().parents[1] / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with DagsterInstance.get() as instance:
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds == 86400
        assert not instance.telemetry_enabled
