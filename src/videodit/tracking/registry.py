"""Model registry policy: new versions are `challenger`; a better challenger takes `champion`.

Versions carry a fingerprint of (data version, code version, config), so re-materializing the same
thing finds its version instead of registering a duplicate.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

CHAMPION = "champion"
CHALLENGER = "challenger"
FINGERPRINT_TAG = "videodit.fingerprint"
SCORE_TAG_PREFIX = "eval."


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
    challenger_version: str
    challenger_score: float
    champion_version: str | None  # the champion before the decision
    champion_score: float | None

    def as_tags(self) -> dict[str, str]:
        return {f"promotion.{k}": str(v) for k, v in asdict(self).items()}


def version_score(version: ModelVersion | None, metric: str) -> float | None:
    if version is None or f"{SCORE_TAG_PREFIX}{metric}" not in version.tags:
        return None
    return float(version.tags[f"{SCORE_TAG_PREFIX}{metric}"])


def promote_if_better(
    client: MlflowClient, name: str, challenger: ModelVersion, metric: str, higher_is_better: bool = True
) -> PromotionDecision:
    """Move `champion` to the challenger when it beats the champion on `metric` (or there is none)."""
    score = version_score(challenger, metric)
    if score is None:
        raise ValueError(f"{name} version {challenger.version} has no {SCORE_TAG_PREFIX}{metric} tag: evaluate it first")
    champion = alias_version(client, name, CHAMPION)
    champion_score = version_score(champion, metric)
    if champion is None:
        promoted, reason = True, "no champion yet: the first evaluated model becomes champion"
    elif champion.version == challenger.version:
        promoted, reason = False, "the challenger already is the champion"
    elif champion_score is None:
        promoted, reason = True, f"champion v{champion.version} has no {metric} score"
    else:
        better = score > champion_score if higher_is_better else score < champion_score
        promoted = better
        relation = "beats" if better else "does not beat"
        reason = f"challenger {metric}={score:.4f} {relation} champion v{champion.version} {metric}={champion_score:.4f}"
    decision = PromotionDecision(
        promoted, reason, metric, challenger.version, score,
        champion.version if champion else None, champion_score,
    )  # fmt: skip
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, challenger.version)
    for key, value in decision.as_tags().items():
        client.set_model_version_tag(name, challenger.version, key, value)
    return decision
