"""Recipe step 1 as Prefect tasks: validate the config (and that the base model's weights are on
this machine), and the flow run's MLflow parent run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks.config.loading import load_spec
from tasks.config.spec import Spec
from tasks.steps.refs import TrackingRef
from tasks.steps.resume import ResumeChain
from tasks.steps.step import step


@step("1 validate config")
def validate_config(config_path: str, data_path: str | None = None) -> Spec:
    """The config, and that its base model's weights are on this machine (before any work)."""
    from tasks.core.errors import SpecError, WeightsError
    from tasks.models.backbones import locate_weights

    spec = load_spec(config_path, data_path)
    described = []
    for model in spec.candidates:
        try:
            weights = locate_weights(model)
        except (SpecError, WeightsError) as error:  # the model's name or weights: say which config
            raise type(error)(f"{config_path}: {error}") from None
        described.append(f"{model.describe()}, {weights.description}")
    what = "base model" if len(described) == 1 else f"{len(described)} candidate base models"
    print(f"Task: {spec.task}  |  contract: {spec.metric.describe()}  |  {what}: " + "; ".join(described))
    if spec.data.guideline is not None:  # part of the contract: the rules the labels follow
        from tasks.core.hashing import sha256_file

        print(f"Labelling guideline: {spec.data.guideline} (sha256 {sha256_file(spec.data.guideline)[:16]})")
    return spec


@contextmanager
def tracked_flow_run(spec: Spec, config_path: str, chain: ResumeChain | None = None) -> Iterator[TrackingRef]:
    """The flow's MLflow parent run: RUNNING while the steps run, then FINISHED, or FAILED when
    any step (or an interrupt) stops the flow; a kill leaves it RUNNING until `--resume` marks it
    KILLED. Tagged with its resume chain and, when resumed, the run it continues."""
    from tasks.registry.tracking import end_run

    tracking = start_tracking(spec, config_path, chain)
    try:
        yield tracking
    except BaseException:
        end_run(tracking.client, tracking.run_id, succeeded=False)
        raise
    end_run(tracking.client, tracking.run_id, succeeded=True)


@step("start tracking")
def start_tracking(spec: Spec, config_path: str, chain: ResumeChain | None = None) -> TrackingRef:
    """The parent run, named as the Prefect flow run is (one name in both UIs), each linking to the
    other where there is a UI to link to; the experiment says what the model is for."""
    from prefect.runtime import flow_run
    from prefect.utilities.urls import url_for

    from tasks.registry.resume_chain import CHAIN_TAG, RESUMED_FROM_TAG, process_tags
    from tasks.registry.tracking import (
        PREFECT_URL_TAG,
        client_for,
        experiment_id,
        log_file,
        log_guideline,
        log_params,
        start_run,
        tracking_uri,
    )

    client = client_for(spec.workdir)
    experiment = experiment_id(client, spec.registry.model_name, spec.workdir, experiment_description(spec))
    prefect_url = url_for("flow-run", obj_id=flow_run.id) if flow_run.id else None
    run_id = start_run(client, experiment, current_flow_run_name(), tags={
        "task": spec.task, "contract": spec.metric.describe(), "prefect_flow_run_id": str(flow_run.id or ""),
        **({PREFECT_URL_TAG: prefect_url} if prefect_url else {}),
        **process_tags(), **({CHAIN_TAG: chain.chain_id} if chain else {}),
        **({RESUMED_FROM_TAG: chain.resumed_from} if chain and chain.resumed_from else {}),
    })
    log_params(client, run_id, with_resolved_weights(spec.model_dump(mode="json", by_alias=True), spec))
    log_file(client, run_id, Path(config_path), "config")
    if spec.data.guideline is not None:
        log_guideline(client, run_id, spec.data.guideline)
    tracking = TrackingRef(run_id, experiment, tracking_uri(spec.workdir))
    link_mlflow_run(spec.registry.model_name, tracking)
    return tracking


def current_flow_run_name() -> str:
    """The running flow's name as the Prefect UI shows it now, read from the API (a run renamed
    after it started would leave the runtime's copy stale); outside a flow, a plain `local`."""
    from prefect import get_client
    from prefect.runtime import flow_run

    if flow_run.id is None:
        return "local"
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run.id).name


def experiment_description(spec: Spec) -> str:
    """The experiment page's description: what the model is for and what it must reach."""
    return (f"**{spec.registry.model_name}**: {spec.task}\n\nContract: {spec.metric.describe()} on the untouched "
            f"test split. Each run is one `transferflow run` (named as its Prefect flow run); its nested runs are "
            f"the baseline and the fine-tuning stages. Versions that pass the gate hold the alias "
            f"`{spec.registry.alias}` of the registered model `{spec.registry.model_name}`.")


def with_resolved_weights(params: dict[str, Any], spec: Spec) -> dict[str, Any]:
    """The config as logged params, each base model's `weights` the ones actually used (unset in
    the config means the offline default: the param names it, e.g. `MobileNet_V2_Weights.IMAGENET1K_V1`)."""
    from tasks.models.backbones import locate_weights

    def resolved(block: dict[str, Any], model: Any) -> dict[str, Any]:
        found = locate_weights(model)
        return {**block, "weights": found.member or found.description}

    logged = dict(params["model"])
    candidates = spec.candidates
    if "candidates" in logged:
        logged["candidates"] = [resolved(block, model) for block, model in zip(logged["candidates"], candidates,
                                                                               strict=True)]
    else:
        logged = resolved(logged, candidates[0])
    return {**params, "model": logged}


def link_mlflow_run(model_name: str, tracking: TrackingRef) -> str | None:
    """A Prefect artifact linking this flow run to its MLflow run's page, when the store is a
    tracking server (a SQLite file has no page to link to). Returns the URL."""
    from tasks.registry.tracking import run_page_url
    from tasks.steps.step import artifact_key, publish_markdown

    url = run_page_url(tracking.store, tracking.experiment_id, tracking.run_id)
    if url:
        publish_markdown(artifact_key(model_name, "mlflow-run"), f"[MLflow run `{tracking.run_id}`]({url})",
                         "This flow run's MLflow run: params, stages, curves, the model and its evidence")
    return url
