"""Champion/challenger policy and the tracking store's errors, on a real SQLite MLflow store."""

import socket

import pytest
from mlflow import MlflowClient

from videodit.tracking.mlflow_store import (
    TrackingStoreUnavailable, check_tracking_store, child_run_id, default_tracking_uri, ensure_experiment, parent_run_id,
)  # fmt: skip
from videodit.tracking.registry import (
    CHALLENGER, CHAMPION, SCORE_TAG_PREFIX, alias_version, find_version, fingerprint, promote_if_better, register_version,
)  # fmt: skip


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    return MlflowClient(default_tracking_uri(root)), root


def _register(client, root, print_, score):
    (root / print_).mkdir(exist_ok=True)
    version = register_version(client, "videodit-test", (root / print_).as_uri(), None, print_, "card", {"k": "v"})
    client.set_model_version_tag("videodit-test", version.version, f"{SCORE_TAG_PREFIX}overall", str(score))
    return client.get_model_version("videodit-test", version.version)


def test_first_model_is_champion_and_only_a_better_one_replaces_it(client):
    client, root = client
    v1 = _register(client, root, "aaa", 0.50)
    assert alias_version(client, "videodit-test", CHALLENGER).version == v1.version
    first = promote_if_better(client, "videodit-test", v1, "overall")
    assert first.promoted and "first" in first.reason
    assert alias_version(client, "videodit-test", CHAMPION).version == v1.version

    worse = _register(client, root, "bbb", 0.40)
    decision = promote_if_better(client, "videodit-test", worse, "overall")
    assert not decision.promoted and decision.champion_score == 0.5 and decision.challenger_score == 0.4
    assert alias_version(client, "videodit-test", CHAMPION).version == v1.version
    assert alias_version(client, "videodit-test", CHALLENGER).version == worse.version
    assert client.get_model_version("videodit-test", worse.version).tags["promotion.promoted"] == "False"

    better = _register(client, root, "ccc", 0.90)
    assert promote_if_better(client, "videodit-test", better, "overall").promoted
    assert alias_version(client, "videodit-test", CHAMPION).version == better.version
    # Lower-is-better metrics (a Fréchet distance) compare the other way.
    assert find_version(client, "videodit-test", "bbb").version == worse.version
    assert find_version(client, "videodit-test", "zzz") is None


def test_runs_nest_under_one_parent_per_dagster_run(client):
    client, root = client
    experiment = ensure_experiment(client, "nesting", root / "artifacts")
    assert ensure_experiment(client, "nesting", root / "artifacts") == experiment
    parent = parent_run_id(client, experiment, "run-123", {"git_commit": "abc"})
    assert parent_run_id(client, experiment, "run-123", {}) == parent
    child = child_run_id(client, experiment, parent, "vae_model", {})
    assert client.get_run(child).data.tags["mlflow.parentRunId"] == parent
    assert parent_run_id(client, experiment, "run-456", {}) != parent


def test_fingerprint_is_stable_and_order_free():
    assert fingerprint(a=1, b={"x": [1, 2]}) == fingerprint(b={"x": [1, 2]}, a=1)
    assert fingerprint(a=1) != fingerprint(a=2)


def test_a_server_that_is_down_is_named_in_the_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TrackingStoreUnavailable, match=rf"http://127\.0\.0\.1:{port} is not reachable"):
        check_tracking_store(f"http://127.0.0.1:{port}")
    with pytest.raises(TrackingStoreUnavailable, match="does not exist"):
        check_tracking_store(f"sqlite:///{tmp_path}/missing/mlflow.db")
    check_tracking_store(default_tracking_uri(tmp_path))
