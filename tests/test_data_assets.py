"""The data half of the graph materialized with Dagster on a tiny dataset."""

import json

import pandas as pd
import pytest
import yaml
from conftest import held_out_phrasings, moving_square, write_video
from dagster import DagsterInstance, materialize
from dvc.repo import Repo

from dagster_project.defs.validation import accepted_fraction_above_threshold, every_clip_accounted_for
from dagster_project.definitions import defs
from dagster_project.defs.jobs import DATA_STAGES
from dagster_project.defs.resources import DVCResource, Workspace
from videodit.captioning.descriptive import held_out_pattern
from videodit.data.shards import ClipShards
from videodit.data.synthetic import CAPTION_TEMPLATES, SHAPES_DOMAIN

data_assets = [a for a in defs.assets if set(a.group_names_by_key.values()) <= set(DATA_STAGES)]
CHECKS = [accepted_fraction_above_threshold, every_clip_accounted_for]


def _materialize(root, remote, instance, selection=None, run_config=None, raise_on_error=True):
    return materialize(
        data_assets + CHECKS,
        selection=selection,
        instance=instance,
        resources={"workspace": Workspace(project_dir=str(root), preset="tiny"), "dvc": DVCResource(remote_url=str(remote))},
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def _metadata(result, asset):
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.path == [asset]]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _remote_objects(remote):
    return sorted(p for p in remote.rglob("*") if p.is_file())


def test_synthetic_graph_materializes_and_reingest_is_idempotent(project):
    root, remote = project
    instance = DagsterInstance.ephemeral()
    result = _materialize(root, remote, instance)
    assert result.success
    raw = _metadata(result, "raw_videos")
    dvc_out = yaml.safe_load((root / "data.dvc").read_text())["outs"][0]
    assert raw["dvc_md5"] == dvc_out["md5"] and raw["dvc_md5"].endswith(".dir")
    assert raw["clips"] == 34 and raw["files"] == 34 + 3  # clips + captions.csv + manifest.jsonl + synthetic.json
    assert raw["pushed_objects"] == raw["files"] + 1  # + the directory listing object
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["raw_videos"]]
    assert event.materialization.tags["dagster/data_version"] == raw["dvc_md5"]

    meta = _metadata(result, "video_metadata")
    assert (meta["clips"], meta["decode_failures"], meta["clips_with_cuts"]) == (34, 0, 0)
    validated = _metadata(result, "validated_clips")
    assert (validated["ingested"], validated["accepted"], validated["quarantined"]) == (34, 34, 0)
    assert validated["data_docs"].startswith("file://") and (root / "great_expectations" / "uncommitted" / "data_docs").is_dir()
    curated = _metadata(result, "training_clips")
    assert curated["train_clips"] + curated["val_clips"] == 34 and curated["val_clips"] >= 1
    # The built-in set in every video bucket: 24 clips at the default size, 2 in each other bucket.
    assert curated["clips_per_bucket"] == {"9x32x32": 24, "5x32x32": 2, "9x24x48": 2, "5x24x48": 2, "9x48x24": 2, "5x48x24": 2}
    shards = ClipShards(root / "artifacts" / "training_clips")
    for row in shards.index.itertuples():  # every clip is stored at its bucket's shape
        assert shards.frames(row.shard, row.row).shape == (row.frames, row.height, row.width, 3)
    assert all(e.passed for e in result.get_asset_check_evaluations())
    captioned = _metadata(result, "captioned_clips")  # captioner "none": the user's captions pass through
    assert (captioned["captioner"], captioned["captioned"], captioned["generated"], captioned["rejected"]) == ("none", 34, 0, 0)
    assert set(shards.index["caption_source"]) == {"user"}

    # Trained on the descriptive captioner's captions: every clip keeps both captions and the captioner's lineage,
    # and none of the generated captions uses a held-out phrasing (the held-out combinations are never rendered).
    descriptive = {"captioning": {"captioner": "descriptive", "train_on": "generated"}}
    recaptioned = _materialize(root, remote, instance, selection=["captioned_clips", "training_clips"],
                               run_config={"ops": {"captioned_clips": {"config": descriptive}}})  # fmt: skip
    captioned = _metadata(recaptioned, "captioned_clips")
    assert (captioned["captioner"], captioned["generated"], captioned["trained_on"]) == ("descriptive", 34, {"generated": 34})
    trained = ClipShards(root / "artifacts" / "training_clips").index
    assert len(trained) == 34 and (trained["caption"] == trained["generated_caption"]).all()
    assert set(trained["captioner"]) == {"descriptive"} and set(trained["captioner_version"]) == {captioned["captioner_version"]}
    templates = [held_out_pattern(template) for template in CAPTION_TEMPLATES]  # a template's captions, as a regex
    assert all(any(t.fullmatch(caption) for t in templates) for caption in trained["user_caption"])  # the templates'
    assert held_out_phrasings(trained["caption"], SHAPES_DOMAIN) == [] and len(set(trained["caption"])) == 34

    # Identical data again: same DVC version, nothing new in the remote.
    before = _remote_objects(remote)
    again = _materialize(root, remote, instance, selection=["raw_videos"])
    assert _metadata(again, "raw_videos")["dvc_md5"] == raw["dvc_md5"]
    assert _metadata(again, "raw_videos")["pushed_objects"] == 0
    assert _remote_objects(remote) == before
    # The remote really holds the data: status is clean and a pull restores a deleted clip.
    repo = Repo(str(root))
    assert repo.status(cloud=True) == {}
    clip = next((root / "data" / "videos").iterdir())
    original = clip.read_bytes()
    clip.unlink()
    repo.checkout(force=True)
    assert clip.read_bytes() == original
    # A different seed is different data: a new version.
    reseeded = _materialize(root, remote, instance, selection=["raw_videos"], run_config={"ops": {"raw_videos": {"config": {"synthetic": {"seed": 7}}}}})
    assert _metadata(reseeded, "raw_videos")["dvc_md5"] != raw["dvc_md5"]


def test_user_folder_flows_through_validation_and_the_blocking_check(project, tmp_path):
    root, remote = project
    src = tmp_path / "my_videos"
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        write_video(src / f"clip{i}.mp4", moving_square(12, height=48, width=64, colour=colour))
    (src / "broken.mp4").write_text("not a video")
    rows = [{"path": f"clip{i}.mp4", "caption": f"square number {i} moves right"} for i in range(3)]
    rows += [{"path": "broken.mp4", "caption": "a broken file"}, {"path": "../escape.mp4", "caption": "escaping the root"}]
    (src / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    instance = DagsterInstance.ephemeral()
    config = {"ops": {"raw_videos": {"config": {"source_dir": str(src)}}}}

    result = _materialize(root, remote, instance, run_config=config)
    validated = _metadata(result, "validated_clips")
    assert (validated["ingested"], validated["accepted"], validated["quarantined"]) == (5, 3, 2)
    quarantine = pd.read_parquet(root / "artifacts" / "validated_clips" / "quarantine.parquet")
    assert set(quarantine["path"]) == {"broken.mp4", "../escape.mp4"}
    assert _metadata(result, "training_clips")["train_clips"] + _metadata(result, "training_clips")["val_clips"] == 3

    # The check compares the decisions with the source listing, so it fails when a clip goes missing on the way.
    workspace = Workspace(project_dir=str(root), preset="tiny")
    decisions_file = root / "artifacts" / "validated_clips" / "decisions.parquet"
    decisions = pd.read_parquet(decisions_file)
    assert every_clip_accounted_for(workspace=workspace).passed
    decisions[decisions["path"] != "broken.mp4"].to_parquet(decisions_file)
    lost = every_clip_accounted_for(workspace=workspace)
    assert not lost.passed and lost.metadata["lost"].value == ["broken.mp4"]
    pd.concat([decisions, decisions.head(1)]).to_parquet(decisions_file)
    assert every_clip_accounted_for(workspace=workspace).metadata["decided_twice"].value == [decisions["path"].iloc[0]]

    # Demand more than 60% accepted: the blocking check fails and nothing downstream materializes.
    strict = {"ops": {**config["ops"], "validated_clips": {"config": {"validation": {"min_accepted_fraction": 0.9}}}}}
    failed = _materialize(root, remote, instance, run_config=strict, raise_on_error=False)
    assert not failed.success
    evaluations = {e.check_name: e.passed for e in failed.get_asset_check_evaluations()}
    assert evaluations == {"accepted_fraction_above_threshold": False, "every_clip_accounted_for": True}
    assert "training_clips" not in {e.asset_key.path[0] for e in failed.get_asset_materialization_events()}


def test_source_inside_the_data_folder_is_refused(project):
    root, remote = project
    (root / "data" / "mine").mkdir(parents=True)
    with pytest.raises(Exception, match="inside the managed data folder"):
        _materialize(root, remote, DagsterInstance.ephemeral(), selection=["raw_videos"],
                     run_config={"ops": {"raw_videos": {"config": {"source_dir": str(root / "data" / "mine")}}}})
