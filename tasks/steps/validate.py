"""Recipe step 1 as Prefect tasks: validate the config (and that the base model's weights are on
this machine), and the flow run's MLflow parent run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
    from prefect.runtime import flow_run

    from tasks.registry.resume_chain import CHAIN_TAG, RESUMED_FROM_TAG, process_tags
    from tasks.registry.tracking import (
        client_for,
        experiment_id,
        log_file,
        log_guideline,
        log_params,
        start_run,
        tracking_uri,
    )

    client = client_for(spec.workdir)
    experiment = experiment_id(client, spec.registry.model_name, spec.workdir)
    run_id = start_run(client, experiment, f"transfer-learning-{flow_run.name or 'local'}", tags={
        "task": spec.task, "contract": spec.metric.describe(), "prefect_flow_run_id": str(flow_run.id or ""),
        **process_tags(), **({CHAIN_TAG: chain.chain_id} if chain else {}),
        **({RESUMED_FROM_TAG: chain.resumed_from} if chain and chain.resumed_from else {}),
    })
    log_params(client, run_id, spec.model_dump(mode="json", by_alias=True))
    log_file(client, run_id, Path(config_path), "config")
    if spec.data.guideline is not None:
        log_guideline(client, run_id, spec.data.guideline)
    return TrackingRef(run_id, experiment, tracking_uri(spec.workdir))
