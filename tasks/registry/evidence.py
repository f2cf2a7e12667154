"""A registered version's evidence: a handful of tags the registry shows at a glance, the whole
record as one JSON artifact of the run that registered it.

The version row in the MLflow UI shows every tag; twenty of them hide the five a reader wants
(the decision, the test metric against the target, the base model, the data). So a version
carries `VERSION_TAGS`, and `evidence.json` in its run holds everything (those five included).
Versions registered before kept all of it as tags: `version_evidence` reads both layouts.
"""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from tasks.registry.tracking import log_text, read_json_artifact

EVIDENCE_ARTIFACT = "evidence.json"
# What the registry's version row shows. `target` is the whole contract there ("accuracy >= 0.9"),
# so the row reads without the JSON; the JSON keeps `metric` and the bare `target` number.
VERSION_TAGS = ("decision", "test_metric", "target", "base_model", "data_fingerprint")


def version_tags(evidence: dict[str, str], contract: str, base_model: str) -> dict[str, str]:
    """The handful of tags for the version row, from the full evidence."""
    shown = {"decision": evidence["decision"], "test_metric": evidence["test_metric"], "target": contract,
             "base_model": base_model, "data_fingerprint": evidence["data_fingerprint"]}
    assert tuple(shown) == VERSION_TAGS
    return shown


def log_evidence(client: MlflowClient, run_id: str, evidence: dict[str, str]) -> None:
    import json

    log_text(client, run_id, json.dumps(evidence, indent=2, sort_keys=True), EVIDENCE_ARTIFACT)


def version_evidence(client: MlflowClient, version: ModelVersion) -> dict[str, str]:
    """Everything the version's run recorded about it (`evidence.json`), with tags set on the version
    later (e.g. `drift_reference`); for a version registered before, its tags."""
    logged = read_json_artifact(client, str(version.run_id), EVIDENCE_ARTIFACT) if version.run_id else None
    return {**(version.tags or {}), **(logged if isinstance(logged, dict) else {})}
