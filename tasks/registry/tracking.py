"""MLflow tracking: one parent run per flow run, nested runs for the baseline and each stage.

Tasks receive run ids (plain strings) and log through an MlflowClient, so logging does not
depend on which thread Prefect runs a task in. The store defaults to SQLite in the workdir with
artifacts beside it; MLFLOW_TRACKING_URI overrides both.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param

if TYPE_CHECKING:
    from tasks.training.fit import EpochRecord

PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"            # the description the MLflow UI shows (runs and experiments)
# The MLflow 3 UI opens an experiment in GenAI mode (traces) unless this tag says it trains models.
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
PREFECT_URL_TAG = "prefect_flow_run_url"    # the parent run's link to its Prefect flow run (with a UI)
GUIDELINE_PARAM = "data.guideline_sha256"   # the labelling guideline a run's labels follow
GUIDELINE_ARTIFACTS = "guideline"           # where the run keeps the guideline file itself


def tracking_uri(workdir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(workdir / 'mlflow.db').resolve()}"


def client_for(workdir: Path) -> MlflowClient:
    """An explicit client for this workdir's store (never MLflow's process-wide URIs, so flows
    with different workdirs in one process never write to each other's store).

    The workdir's own SQLite store is opened under a file lock: two processes creating a new
    store at once would both run MLflow's schema migrations, and one would crash."""
    uri = tracking_uri(workdir)
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return client_of(uri)
    from tasks.core.atomic import exclusive_lock

    with exclusive_lock(workdir / "locks" / "mlflow-store.lock"):
        return client_of(uri)


@functools.cache
def client_of(uri: str) -> MlflowClient:
    """One client per store and process, with both stores opened now: opening a SQLite store
    checks (and on first use creates) its schema, which is slow and must not race."""
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments(max_results=1)
    client.search_registered_models(max_results=1)
    return client


def experiment_id(client: MlflowClient, name: str, workdir: Path, description: str | None = None) -> str:
    """The experiment's id, creating it with artifacts under the workdir (not the current dir).
    With `description`, the experiment's page shows it, in the UI's model-training view."""
    from mlflow.exceptions import MlflowException

    existing = client.get_experiment_by_name(name)
    if existing:
        found = existing.experiment_id
    else:
        artifacts = (None if os.environ.get("MLFLOW_TRACKING_URI")
                     else (workdir / "mlartifacts" / name).resolve().as_uri())
        try:
            found = client.create_experiment(name, artifact_location=artifacts)
        except MlflowException:  # another process created it between the two calls
            created = client.get_experiment_by_name(name)
            if created is None:
                raise
            found = created.experiment_id
    if description is not None and (existing is None or existing.tags.get(NOTE_TAG) != description):
        client.set_experiment_tag(found, NOTE_TAG, description)
        client.set_experiment_tag(found, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return found


def internal_experiment_note(what: str) -> str:
    """The description of an experiment transferflow keeps for itself, beside the users' models."""
    return (f"**Internal to transferflow**: {what} Nothing here is a model to look at: each model's runs are in "
            "the experiment named after it. The open-source MLflow UI cannot hide an experiment without "
            "deleting it (which would stop runs being added), so it is listed; leave it, and do not delete it.")


def describe_run(client: MlflowClient, run_id: str, description: str) -> None:
    """The run's description: the first thing its page in the MLflow UI shows."""
    client.set_tag(run_id, NOTE_TAG, description)


def run_page_url(store: str, experiment: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI, when the store is a tracking server (a SQLite file has no UI URL),
    in the "Model training" view: without the query MLflow 3.17 shows the page in its GenAI layout."""
    if not store.startswith(("http://", "https://")):
        return None
    return f"{store.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning"


def start_run(client: MlflowClient, experiment: str, name: str, parent_run_id: str | None = None,
              tags: dict[str, str] | None = None) -> str:
    all_tags = dict(tags or {})
    if parent_run_id:
        all_tags[PARENT_TAG] = parent_run_id
    return client.create_run(experiment, run_name=name, tags=all_tags).info.run_id


@contextmanager
def child_run(client: MlflowClient, experiment: str, name: str, parent_run_id: str,
              tags: dict[str, str] | None = None) -> Iterator[str]:
    """A nested run open for as long as the block's work: created when it starts (so its duration
    in the UI is the work's), FINISHED when it ends, FAILED when an error (or an interrupt) stops it."""
    run_id = start_run(client, experiment, name, parent_run_id=parent_run_id, tags=tags)
    try:
        yield run_id
    except BaseException:
        end_run(client, run_id, succeeded=False)
        raise
    end_run(client, run_id, succeeded=True)


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    flat = flatten(params)
    client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in flat.items()])


def log_guideline(client: MlflowClient, run_id: str, path: Path) -> str:
    """The labelling guideline with the run: its sha256 as a param (what the model card and a later
    run compare) and the file as an artifact. Returns the sha256."""
    from tasks.core.hashing import sha256_file

    digest = sha256_file(path)
    client.log_param(run_id, GUIDELINE_PARAM, digest)
    log_file(client, run_id, path, GUIDELINE_ARTIFACTS)
    return digest


def run_param(client: MlflowClient, run_id: str, key: str) -> str | None:
    """A param of a run, or None when the run never logged it."""
    return client.get_run(run_id).data.params.get(key)


def log_scores(client: MlflowClient, run_id: str, scores: dict[str, float], prefix: str = "",
               step: int = 0) -> None:
    import time

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(f"{prefix}{k}", float(v), now, step) for k, v in scores.items()])


def log_history(client: MlflowClient, run_id: str, history: list[EpochRecord], metric_key: str) -> None:
    """Per-epoch curves: train loss, validation loss and the declared metric on validation."""
    for record in history:
        log_scores(client, run_id, {
            "train_loss": record.train_loss, "val_loss": record.val_loss, f"val_{metric_key}": record.val_metric,
        }, step=record.epoch)


def log_text(client: MlflowClient, run_id: str, text: str, artifact_file: str) -> None:
    client.log_text(run_id, text, artifact_file)


def log_file(client: MlflowClient, run_id: str, path: Path, artifact_dir: str | None = None) -> None:
    client.log_artifact(run_id, str(path), artifact_dir)


def log_figure(client: MlflowClient, run_id: str, figure: Any, artifact_file: str) -> None:
    import matplotlib.pyplot as plt

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / Path(artifact_file).name
        figure.savefig(path, dpi=110, bbox_inches="tight")
        client.log_artifact(run_id, str(path), str(Path(artifact_file).parent) if "/" in artifact_file else None)
    plt.close(figure)


def read_json_artifact(client: MlflowClient, run_id: str, artifact: str) -> Any:
    """An artifact's JSON, or None when it is missing or damaged."""
    import json

    from mlflow.exceptions import MlflowException

    try:
        with tempfile.TemporaryDirectory() as folder:
            return json.loads(Path(client.download_artifacts(run_id, artifact, folder)).read_text())
    except (MlflowException, OSError, ValueError):
        return None


def end_run(client: MlflowClient, run_id: str, succeeded: bool) -> None:
    client.set_terminated(run_id, "FINISHED" if succeeded else "FAILED")


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
