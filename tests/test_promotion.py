"""Champion/challenger promotion, the model cards `registered_model` writes and the `champion_alias_resolves` check,
on real SQLite stores with tiny logged models."""

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest
import torch
from dagster import materialize
from mlflow import MlflowClient

from dagster_project.defs.evaluation import REPORT_FILE, champion_alias_resolves, registered_model
from dagster_project.defs.training import DIT_MODEL, VAE_MODEL
from dagster_project.defs.resources import MLflowTracking, Workspace
from videodit.tracking.mlflow_store import default_tracking_uri, ensure_experiment
from videodit.tracking.registry import (
    CHALLENGER, CHAMPION, EVAL_CONFIG_TAG, SCORE_TAG_PREFIX, alias_version, find_version, promote_if_better,
    record_scores, register_version, serve_precision,
)  # fmt: skip

ON_84_PROMPTS, ON_8_PROMPTS = "eval-84-prompts", "eval-8-prompts"  # two evaluation hashes


@contextmanager
def _process_wide_store(root):
    """A SQLite store in `root`, its URI set process-wide (a `models:/` source resolves through it) and then put back."""
    uri = default_tracking_uri(root)
    before = os.environ.get("MLFLOW_TRACKING_URI")  # what MLflow's process-wide URI was (it mirrors it there)
    mlflow.set_tracking_uri(uri)
    yield root, MlflowClient(uri, registry_uri=uri)
    mlflow.set_tracking_uri(before)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store for the policy tests (a store takes seconds to create); each test registers its own model name."""
    with _process_wide_store(tmp_path_factory.mktemp("registry")) as found:
        yield found


@pytest.fixture
def project(tmp_path):
    """A project of its own, for the tests of assets that read `videodit-dit` and `videodit-vae`."""
    with _process_wide_store(tmp_path) as found:
        yield found


def _register(client, root, name, print_="print", scores=None, evaluation=ON_84_PROMPTS):
    """A new version of `name` (no model files), scored under `evaluation` when `scores` are given."""
    model = client.create_logged_model(ensure_experiment(client, "registry", default_tracking_uri(root)))
    version = register_version(client, name, model.model_id, None, print_, "card", {})
    return record_scores(client, name, version.version, scores, evaluation) if scores else version


def _never_rescored(version):
    raise AssertionError(f"v{version.version} was scored under the challenger's evaluation: nothing to re-score")


def test_first_model_is_champion_and_only_a_better_one_replaces_it(store):
    root, client = store
    name = "first-and-better"
    v1 = _register(client, root, name, print_="aaa", scores={"overall": 0.50})
    assert alias_version(client, name, CHALLENGER).version == v1.version
    first = promote_if_better(client, name, v1, "overall", _never_rescored)
    assert first.promoted and "first" in first.reason and first.evaluation_config == ON_84_PROMPTS
    assert alias_version(client, name, CHAMPION).version == v1.version

    worse = _register(client, root, name, print_="bbb", scores={"overall": 0.40})
    decision = promote_if_better(client, name, worse, "overall", _never_rescored)
    assert not decision.promoted and decision.champion_score == 0.5 and decision.challenger_score == 0.4
    assert alias_version(client, name, CHAMPION).version == v1.version
    assert alias_version(client, name, CHALLENGER).version == worse.version
    assert client.get_model_version(name, worse.version).tags["promotion.promoted"] == "False"

    better = _register(client, root, name, print_="ccc", scores={"overall": 0.90})
    assert promote_if_better(client, name, better, "overall", _never_rescored).promoted
    assert alias_version(client, name, CHAMPION).version == better.version
    assert find_version(client, name, "bbb").version == worse.version
    assert find_version(client, name, "zzz") is None


def test_a_champion_scored_under_another_evaluation_is_scored_again_under_the_challengers(store):
    root, client = store
    name = "rescored"
    champion = _register(client, root, name, scores={"overall": 0.90, "shape": 0.95}, evaluation=ON_84_PROMPTS)
    promote_if_better(client, name, champion, "overall", _never_rescored)
    # On 8 prompts the challenger scores 0.5: below the champion's 84-prompt 0.9, above its 8-prompt 0.3.
    challenger = _register(client, root, name, print_="new", scores={"overall": 0.50, "shape": 0.6}, evaluation=ON_8_PROMPTS)
    rescored = []

    def rescore(version):
        rescored.append(version.version)
        return {"overall": 0.30, "shape": 0.4}

    decision = promote_if_better(client, name, challenger, "overall", rescore)
    assert rescored == [champion.version]
    assert decision.promoted and decision.champion_score == 0.3 and decision.evaluation_config == ON_8_PROMPTS
    assert "re-evaluated under the challenger's evaluation eval-8-prompts" in decision.reason
    tags = client.get_model_version(name, champion.version).tags  # the old champion's scores now say where they came from
    assert (tags[f"{SCORE_TAG_PREFIX}overall"], tags[f"{SCORE_TAG_PREFIX}shape"], tags[EVAL_CONFIG_TAG]) == ("0.300000", "0.400000", ON_8_PROMPTS)


def test_a_nan_score_never_promotes_and_a_nan_champion_loses_to_any_number(store):
    root, client = store
    name = "nan"
    nan_first = _register(client, root, name, print_="a", scores={"frechet_distance": float("nan")})
    decision = promote_if_better(client, name, nan_first, "frechet_distance", _never_rescored, higher_is_better=False)
    assert not decision.promoted and "NaN" in decision.reason and alias_version(client, name, CHAMPION) is None

    champion = _register(client, root, name, print_="b", scores={"frechet_distance": 10.0})
    assert promote_if_better(client, name, champion, "frechet_distance", _never_rescored, higher_is_better=False).promoted
    nan_challenger = _register(client, root, name, print_="c", scores={"frechet_distance": float("nan")})
    assert not promote_if_better(client, name, nan_challenger, "frechet_distance", _never_rescored, higher_is_better=False).promoted
    assert alias_version(client, name, CHAMPION).version == champion.version

    client.set_model_version_tag(name, champion.version, f"{SCORE_TAG_PREFIX}frechet_distance", "nan")
    finite = _register(client, root, name, print_="d", scores={"frechet_distance": 50.0})
    decision = promote_if_better(client, name, finite, "frechet_distance", _never_rescored, higher_is_better=False)
    assert decision.promoted and "no frechet_distance score" in decision.reason


def test_a_lower_is_better_metric_promotes_the_lower_score(store):
    root, client = store
    name = "lower-is-better"
    champion = _register(client, root, name, print_="a", scores={"frechet_distance": 10.0})
    promote_if_better(client, name, champion, "frechet_distance", _never_rescored, higher_is_better=False)
    higher = _register(client, root, name, print_="b", scores={"frechet_distance": 12.0})
    assert not promote_if_better(client, name, higher, "frechet_distance", _never_rescored, higher_is_better=False).promoted
    lower = _register(client, root, name, print_="c", scores={"frechet_distance": 8.0})
    decision = promote_if_better(client, name, lower, "frechet_distance", _never_rescored, higher_is_better=False)
    assert decision.promoted and "frechet_distance=8.0000 beats champion" in decision.reason
    assert alias_version(client, name, CHAMPION).version == lower.version


def test_the_quantized_bundle_serves_only_within_the_adherence_margin_of_fp32(store):
    root, client = store
    name = "precision"
    fp32, int8 = _register(client, root, name, print_="fp32"), _register(client, root, name, print_="int8")
    within = serve_precision(client, name, fp32, 0.80, int8, 0.79, "overall", 0.02)
    assert within.served_version == str(int8.version) and alias_version(client, name, CHAMPION).version == int8.version
    assert within.reason == f"quantized v{int8.version} overall=0.7900 is within 0.02 of fp32 v{fp32.version} overall=0.8000: v{int8.version} serves"
    beyond = serve_precision(client, name, fp32, 0.80, int8, 0.77, "overall", 0.02)
    assert beyond.served_version == str(fp32.version) and alias_version(client, name, CHAMPION).version == fp32.version
    assert "overall=0.7700 is not within 0.02 of fp32" in beyond.reason
    for version in (fp32, int8):  # the last decision, on both versions
        tags = client.get_model_version(name, version.version).tags
        assert tags["serving.served_version"] == str(fp32.version) and tags["serving.quantized_score"] == "0.77"
    assert serve_precision(client, name, fp32, 0.80, int8, float("nan"), "overall", 0.02).served_version == str(fp32.version)
    alone = serve_precision(client, name, fp32, 0.80, None, None, "overall", 0.02)
    assert alone.served_version == str(fp32.version) and alone.reason == f"no quantized bundle: fp32 v{fp32.version} serves"


def _resources(root):
    return {"workspace": Workspace(project_dir=str(root), preset="tiny"), "mlflow_tracking": MLflowTracking(tracking_uri=default_tracking_uri(root))}


def _write_report(root, version, overall, reason):
    report = {"metrics": {"overall": overall}, "decision": {"reason": reason}, "dit_version": version, "min_overall": 0.0}
    (Workspace(project_dir=str(root)).artifacts("model_evaluation") / REPORT_FILE).write_text(json.dumps(report))


def test_registered_model_replaces_the_model_cards_evaluation_instead_of_appending_one(project):
    root, client = project
    version = _register(client, root, DIT_MODEL, scores={"overall": 0.5})
    for overall, reason in ((0.5, "first decision"), (0.7, "second decision")):
        _write_report(root, version.version, overall, reason)
        assert materialize([registered_model], resources=_resources(root)).success
    card = client.get_model_version(DIT_MODEL, version.version).description
    assert card == "card\n\nEvaluation:\n- overall: 0.7000\n\nDecision: second decision"


def _register_logged_model(client, root, name):
    """`name` v1 as `champion`: a tiny PyTorch model logged with its files."""
    with mlflow.start_run(experiment_id=ensure_experiment(client, "models", default_tracking_uri(root))) as run:
        info = mlflow.pytorch.log_model(torch.nn.Linear(2, 2), name="model", serialization_format="pickle", pip_requirements=[])
    version = register_version(client, name, info.model_id, run.info.run_id, name, "card", {})
    client.set_registered_model_alias(name, CHAMPION, version.version)
    return Path(urlparse(mlflow.get_logged_model(info.model_id).artifact_location).path)


def test_champion_alias_resolves_fails_when_the_model_files_are_gone_from_the_store(project):
    root, client = project
    stored = {name: _register_logged_model(client, root, name) for name in (DIT_MODEL, VAE_MODEL)}
    resources = _resources(root)

    def check():
        return champion_alias_resolves(workspace=resources["workspace"], mlflow_tracking=resources["mlflow_tracking"])

    assert check().passed
    shutil.rmtree(stored[DIT_MODEL] / "data")  # the weights, as the pytorch flavor in MLmodel names them
    (stored[VAE_MODEL] / "MLmodel").unlink()
    result = check()
    assert not result.passed
    assert {k: v.value for k, v in result.metadata.items()} == {
        DIT_MODEL: "v1 lacks data in the artifact store", VAE_MODEL: "v1 lacks MLmodel in the artifact store",
    }  # fmt: skip
