"""Model registry policy: new versions are `challenger`; a better challenger takes `champion`; of an exported
bundle and its quantized copy, the copy serves (`champion`) only when its adherence holds (`serve_precision`).

Versions carry a fingerprint of (data version, code version, config), so re-materializing the same
thing finds its version instead of registering a duplicate. Scores (`eval.*` tags) carry the hash of the
evaluation that produced them (`EVAL_CONFIG_TAG`): promotion compares a challenger and a champion only
when both were scored under the same one, and re-scores the champion first when they were not.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts, list_artifacts
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model

CHAMPION = "champion"
CHALLENGER = "challenger"
FINGERPRINT_TAG = "videodit.fingerprint"
SCORE_TAG_PREFIX = "eval."
EVAL_CONFIG_TAG = "videodit.eval_config"  # the hash of the evaluation (config and data) the scores come from
PRECISION_TAG = "precision"  # of an exported bundle's version: its bundle.json's (fp32, int8)
MLMODEL_FILE = "MLmodel"
FLAVOR_DATA_KEYS = ("model_data", "data")  # where an MLflow flavor names the files that hold the model


def fingerprint(**parts) -> str:
    """A short stable hash of JSON-serialisable parts (data version, code version, config…)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def find_version(client: MlflowClient, name: str, print_: str) -> ModelVersion | None:
    """The newest version of `name` with this fingerprint, or None."""
    try:
        found = client.search_model_versions(f"name = '{name}' and tags.`{FINGERPRINT_TAG}` = '{print_}'")
    except MlflowException:
        return None
    return max(found, key=lambda v: int(v.version)) if found else None


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def register_version(
    client: MlflowClient, name: str, model_id: str, run_id: str, print_: str, description: str, tags: dict[str, str]
) -> ModelVersion:
    """Register the logged model `model_id` as a new version of `name` and give it the `challenger` alias.

    A server accepts a `models:/<model_id>` source only together with the id it names.
    """
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=f"videodit: {name}")
    version = client.create_model_version(
        name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id, description=description,
        tags={**tags, FINGERPRINT_TAG: print_},
    )  # fmt: skip
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return version


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    reason: str
    metric: str
    evaluation_config: str  # the hash both scores were measured under
    challenger_version: str
    challenger_score: float
    champion_version: str | None  # the champion before the decision
    champion_score: float | None

    def as_tags(self) -> dict[str, str]:
        return {f"promotion.{k}": str(v) for k, v in asdict(self).items()}


# Scores a registered version under the challenger's evaluation: metric name → value.
Rescorer = Callable[[ModelVersion], dict[str, float]]


def version_score(version: ModelVersion | None, metric: str) -> float | None:
    if version is None or f"{SCORE_TAG_PREFIX}{metric}" not in version.tags:
        return None
    return float(version.tags[f"{SCORE_TAG_PREFIX}{metric}"])


def record_scores(client: MlflowClient, name: str, version: str, scores: dict[str, float], evaluation_config: str) -> ModelVersion:
    """Tag `version` with its scores and the hash of the evaluation that produced them; the version as tagged."""
    for metric, value in scores.items():
        client.set_model_version_tag(name, version, f"{SCORE_TAG_PREFIX}{metric}", f"{value:.6f}")
    client.set_model_version_tag(name, version, EVAL_CONFIG_TAG, evaluation_config)
    return client.get_model_version(name, version)


def _comparable_champion(client: MlflowClient, name: str, challenger: ModelVersion, rescore: Rescorer) -> tuple[ModelVersion | None, bool]:
    """(champion, whether it was re-scored): a champion scored under another evaluation is scored again under
    the challenger's, so the two scores compare like with like."""
    champion = alias_version(client, name, CHAMPION)
    config = challenger.tags[EVAL_CONFIG_TAG]
    if champion is None or champion.version == challenger.version or champion.tags.get(EVAL_CONFIG_TAG) == config:
        return champion, False
    return record_scores(client, name, champion.version, rescore(champion), config), True


def _decide(score: float, champion: ModelVersion | None, champion_score: float | None, metric: str, higher_is_better: bool) -> tuple[bool, str]:
    if math.isnan(score):
        return False, f"challenger {metric} is NaN: a NaN never promotes"
    if champion is None:
        return True, "no champion yet: the first evaluated model becomes champion"
    if champion_score is None or math.isnan(champion_score):
        return True, f"champion v{champion.version} has no {metric} score under this evaluation"
    better = score > champion_score if higher_is_better else score < champion_score
    relation = "beats" if better else "does not beat"
    return better, f"challenger {metric}={score:.4f} {relation} champion v{champion.version} {metric}={champion_score:.4f}"


def promote_if_better(
    client: MlflowClient, name: str, challenger: ModelVersion, metric: str, rescore: Rescorer, higher_is_better: bool = True
) -> PromotionDecision:
    """Move `champion` to the challenger when it beats the champion on `metric` (or there is none).

    Both scores come from the same evaluation (`EVAL_CONFIG_TAG`): `rescore` scores the champion again when it was
    evaluated otherwise. A NaN challenger score never promotes; a NaN champion score loses to any number.
    """
    score = version_score(challenger, metric)
    if score is None or EVAL_CONFIG_TAG not in challenger.tags:
        raise ValueError(f"{name} version {challenger.version} has no {SCORE_TAG_PREFIX}{metric} score: evaluate it first")
    champion, rescored = _comparable_champion(client, name, challenger, rescore)
    champion_score = version_score(champion, metric)
    promoted, reason = _decide(score, champion, champion_score, metric, higher_is_better)
    if rescored:
        reason += f" (champion re-evaluated under the challenger's evaluation {challenger.tags[EVAL_CONFIG_TAG]})"
    decision = PromotionDecision(
        promoted, reason, metric, challenger.tags[EVAL_CONFIG_TAG], challenger.version, score,
        champion.version if champion else None, champion_score,
    )  # fmt: skip
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, challenger.version)
    for key, value in decision.as_tags().items():
        client.set_model_version_tag(name, challenger.version, key, value)
    return decision


@dataclass(frozen=True)
class PrecisionDecision:
    """Which version of one exported bundle `champion` serves: its quantized copy only when the copy's adherence holds."""

    served_version: str
    reason: str
    metric: str
    max_drop: float  # how far below the fp32 bundle's `metric` the quantized one may score and still serve
    fp32_version: str
    fp32_score: float
    quantized_version: str | None  # None: no quantized copy was made
    quantized_score: float | None

    def as_tags(self) -> dict[str, str]:
        return {f"serving.{k}": str(v) for k, v in asdict(self).items()}


def serve_precision(
    client: MlflowClient, name: str, fp32: ModelVersion, fp32_score: float, quantized: ModelVersion | None,
    quantized_score: float | None, metric: str, max_drop: float,
) -> PrecisionDecision:  # fmt: skip
    """Point `champion` of `name` at the quantized version when its `metric` is at most `max_drop` below the
    fp32 version's (a NaN never holds), else at the fp32 one; the decision is tagged on both."""
    if quantized is None:
        served, reason = fp32, f"no quantized bundle: fp32 v{fp32.version} serves"
    else:
        holds = quantized_score >= fp32_score - max_drop  # False when either is NaN
        served = quantized if holds else fp32
        reason = (f"quantized v{quantized.version} {metric}={quantized_score:.4f} is {'' if holds else 'not '}within "
                  f"{max_drop} of fp32 v{fp32.version} {metric}={fp32_score:.4f}: v{served.version} serves")  # fmt: skip
    decision = PrecisionDecision(
        str(served.version), reason, metric, max_drop, str(fp32.version), fp32_score,
        str(quantized.version) if quantized else None, quantized_score,
    )  # fmt: skip
    client.set_registered_model_alias(name, CHAMPION, served.version)
    for version in filter(None, (fp32, quantized)):
        for key, value in decision.as_tags().items():
            client.set_model_version_tag(name, version.version, key, value)
    return decision


def _model_files(root: str, path: str = "") -> set[str]:
    """Every file of the registered model at `root` (a `models:/` URI), by its path inside the model."""
    files = set()
    for entry in list_artifacts(artifact_uri=f"{root}/{path}" if path else root):
        files |= _model_files(root, entry.path) if entry.is_dir else {entry.path}
    return files


def missing_model_files(name: str, version: str) -> list[str]:
    """What the store lacks of `models:/<name>/<version>`: its MLmodel, or a path its flavors name that holds no file."""
    root = f"models:/{name}/{version}"
    files = _model_files(root)
    if MLMODEL_FILE not in files:
        return [MLMODEL_FILE]
    flavors = Model.load(download_artifacts(artifact_uri=f"{root}/{MLMODEL_FILE}")).flavors.values()
    named = {conf[key] for conf in flavors for key in FLAVOR_DATA_KEYS if isinstance(conf.get(key), str)}
    return sorted(path for path in named if not any(file == path or file.startswith(f"{path}/") for file in files))
