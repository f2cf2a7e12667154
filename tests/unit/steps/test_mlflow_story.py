"""What the MLflow UI tells of a run, from the real steps on a real SQLite store and a tiny real
model: each stage's run is open while the stage trains (so its duration is the training's) and
FAILED when the stage fails; the selected stage is tagged; the version shows a handful of tags
while its run's `evidence.json` holds the rest; the model is a logged model linked to the version;
the parent run, the experiment and the registered model describe themselves; `model.weights`
names the weights used; and the parent run is named as its Prefect flow run, each linking to the
other where there is a UI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.entities import LoggedModelStatus
from prefect import flow, get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.settings import PREFECT_UI_URL, temporary_settings

import tasks.training.fit as fitting
import tasks.training.probe as probing
from tasks.config.loading import load_spec
from tasks.config.spec import Spec
from tasks.data.split import SplitRef
from tasks.decisions.gate import ChampionComparison, Exposure
from tasks.decisions.log import Decisions
from tasks.registry.evidence import EVIDENCE_ARTIFACT, VERSION_TAGS
from tasks.registry.tracking import NOTE_TAG, PREFECT_URL_TAG, start_run
from tasks.steps.learn import StagePlan, fine_tune_stage, train_baseline
from tasks.steps.refs import DatasetRef, TestResult, TrackingRef
from tasks.steps.release import gate_and_register, move_alias
from tasks.steps.select import SELECTED_TAG, select_on_validation
from tasks.steps.validate import link_mlflow_run, start_tracking
from tasks.training.metrics import Contract
from tests.conftest import write_config
from tests.unit.decisions.test_operating_point import colour_images

CLASSES = ["ants", "bees"]
CONFIG = """
task: Tell ants from bees by colour.
metric: {{name: accuracy, target: 0.75}}
data: {{kind: image_folder, path: {data}}}
model: {{family: torchvision, name: mobilenet_v2, image_size: 32}}
train: {{batch_size: 8, head_epochs: 3}}
finetune: {{epochs_per_stage: 2, max_stages: 1}}
registry: {{model_name: insects}}
workdir: {workdir}
"""


class Timed:
    """Wraps a training function, recording when each call ran (epoch ms)."""

    def __init__(self, real) -> None:
        self.real, self.calls = real, []

    def __call__(self, *args, **kwargs):
        started = time.time() * 1000
        result = self.real(*args, **kwargs)
        time.sleep(0.05)  # so that a run created after the work could not pass for one covering it
        self.calls.append((started, time.time() * 1000))
        return result


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("story")
    paths = colour_images(folder, 24, seed=3)
    ids = [f"id-{i}" for i in range(len(paths))]
    pd.DataFrame({"example_id": ids, "input": paths, "label": [CLASSES[i % 2] for i in range(len(paths))]}
                 ).to_parquet(folder / "table.parquet", index=False)
    (folder / "split.json").write_text(json.dumps({"splits": {"train": ids[:12], "val": ids[12:20],
                                                              "test": ids[20:]}}))
    (folder / "data" / "ants").mkdir(parents=True)
    config = write_config(folder, CONFIG.format(data=folder / "data", workdir=folder / "work"))
    spec = load_spec(config)
    dataset = DatasetRef(folder / "table.parquet", "fingerprint", tuple(CLASSES), None, ())
    split = SplitRef(folder / "split.json", "sha", {"train": 12, "val": 8, "test": 4}, "test-fingerprint", (),
                     "history")
    return spec, config, dataset, split


@flow(flow_run_name="insects-manual-2026-12-03-070000")
def tracked(spec: Spec, config: str) -> tuple[TrackingRef, str]:
    from prefect.runtime import flow_run

    return start_tracking.fn(spec, config), str(flow_run.id)


@pytest.fixture(scope="module")
def story(workdir):
    """Steps 1, 5, 6 and the selection as the flow runs them, training timed."""
    spec, config, dataset, split = workdir
    with temporary_settings({PREFECT_UI_URL: "http://prefect.example:4200"}):
        tracking, flow_run_id = tracked(spec, str(config))
    one = spec.with_model(spec.candidates[0])
    contract = Contract(spec.metric)
    probe, fit = Timed(probing.probe_head), Timed(fitting.fit)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(probing, "probe_head", probe)
        baseline = train_baseline.fn(one, dataset, split, tracking, None, contract)
    with pytest.MonkeyPatch.context() as patch:  # the baseline's head is fit too: timed apart
        patch.setattr(fitting, "fit", fit)
        stage = fine_tune_stage.fn(one, dataset, split, baseline, StagePlan(1, "finetune-1", 1), tracking, contract)
    selected = select_on_validation.fn(spec, [baseline, stage], Decisions(), tracking, contract, CLASSES)
    return spec, one, tracking, flow_run_id, {"baseline": (baseline, probe.calls), "finetune-1": (stage, fit.calls)}, \
        selected


def test_the_parent_run_is_named_as_its_flow_run_and_links_to_it(story):
    _, _, tracking, flow_run_id, *_ = story
    with get_client(sync_client=True) as prefect:
        name = prefect.read_flow_run(flow_run_id).name
    parent = tracking.client.get_run(tracking.run_id)
    assert parent.info.run_name == name == "insects-manual-2026-12-03-070000"
    assert parent.data.tags[PREFECT_URL_TAG] == f"http://prefect.example:4200/runs/flow-run/{flow_run_id}"


def test_the_experiment_says_what_the_model_is_for_and_opens_in_the_model_training_view(story):
    spec, _, tracking, *_ = story
    tags = tracking.client.get_experiment(tracking.experiment_id).tags
    assert spec.task in tags[NOTE_TAG] and "accuracy >= 0.75" in tags[NOTE_TAG]
    assert tags["mlflow.experimentKind"] == "custom_model_development"


def test_model_weights_names_the_weights_actually_used(story):
    _, _, tracking, *_ = story
    params = tracking.client.get_run(tracking.run_id).data.params
    assert params["model.weights"] == "MobileNet_V2_Weights.IMAGENET1K_V1"  # the config left it unset


@pytest.mark.parametrize("name", ["baseline", "finetune-1"])
def test_each_stage_run_is_open_exactly_while_its_stage_trains(story, name):
    _, _, tracking, _, stages, _ = story
    result, calls = stages[name]
    [(trained_from, trained_to)] = calls
    run = tracking.client.get_run(result.run_id)
    assert run.info.run_name == name and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == tracking.run_id
    assert run.info.start_time <= trained_from < trained_to <= run.info.end_time  # it covers the training
    children = tracking.client.search_runs([tracking.experiment_id],
                                           f"tags.`mlflow.parentRunId` = '{tracking.run_id}'")
    assert [r.info.run_name for r in children].count(name) == 1  # one run per stage


def test_a_stage_that_fails_leaves_a_failed_run(workdir, story):
    spec, _, dataset, split = workdir
    _, one, tracking, _, stages, _ = story

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    with pytest.MonkeyPatch.context() as patch, pytest.raises(RuntimeError, match="out of memory"):
        patch.setattr(fitting, "fit", broken)
        fine_tune_stage.fn(one, dataset, split, stages["baseline"][0], StagePlan(1, "finetune-1-retry", 1, True),
                           tracking, Contract(spec.metric))
    [failed] = tracking.client.search_runs([tracking.experiment_id], "attributes.run_name = 'finetune-1-retry'")
    assert failed.info.status == "FAILED" and failed.info.end_time >= failed.info.start_time


def test_only_the_selected_stage_is_tagged(story):
    *_, stages, selected = story
    client = story[2].client
    tagged = {name: client.get_run(result.run_id).data.tags.get(SELECTED_TAG) for name, (result, _) in stages.items()}
    assert tagged == {name: ("true" if name == selected.name else None) for name in stages}


@pytest.fixture(scope="module")
def released(story, workdir):
    """Step 7b and 7e for a first version (no champion before it), then a challenger's 7b."""
    _, _, dataset, split = workdir
    _, one, tracking, *_, selected = story
    exposure = Exposure(4, 0, 0, 0)
    first = TestResult({"accuracy": 0.8}, 0.8, 4, exposure, None, ChampionComparison(None, None))
    outcome = move_alias.fn(one, gate_and_register.fn(one, dataset, split, selected, first, tracking), tracking)
    second = TestResult({"accuracy": 0.5}, 0.5, 4, exposure, None, ChampionComparison("1", 0.8))
    client = tracking.client
    retrain = TrackingRef(start_run(client, tracking.experiment_id, "retrain"), tracking.experiment_id, tracking.store)
    challenger = gate_and_register.fn(one, dataset, split, selected, second, retrain)
    return outcome, (challenger, retrain)


def evidence_of(client, run_id: str, folder: Path) -> dict[str, str]:
    return json.loads(Path(client.download_artifacts(run_id, EVIDENCE_ARTIFACT, str(folder))).read_text())


def test_the_version_shows_a_handful_of_tags_and_its_runs_evidence_json_the_rest(story, released, tmp_path):
    _, _, tracking, *_, selected = story
    outcome, _ = released
    client = tracking.client
    version = client.get_model_version("insects", outcome.registration.version)
    assert tuple(version.tags) == VERSION_TAGS
    assert version.tags == {"decision": "promoted", "test_metric": "0.800000", "target": "accuracy >= 0.75",
                            "base_model": "torchvision:mobilenet_v2", "data_fingerprint": "fingerprint"}
    with_evidence = evidence_of(client, version.run_id, tmp_path)
    assert with_evidence["selected_stage"] == selected.name and with_evidence["target"] == "0.75"
    assert with_evidence["checkpoint_sha256"] == selected.checkpoint_sha256
    assert with_evidence["test_fingerprint"] == "test-fingerprint" and with_evidence["n_test"] == "4"
    assert with_evidence["decision"] == version.tags["decision"] and with_evidence["metric"] == "accuracy"
    assert set(VERSION_TAGS) - {"target", "base_model"} <= set(with_evidence)


def test_previous_champion_replaces_champion_version(story, released, tmp_path):
    tracking = story[2]
    _, (challenger, retrain) = released
    client = tracking.client
    run_tags = client.get_run(tracking.run_id).data.tags
    assert run_tags["previous_champion"] == "none" and "champion_version" not in run_tags
    (tmp_path / "first").mkdir(), (tmp_path / "second").mkdir()
    assert evidence_of(client, tracking.run_id, tmp_path / "first")["previous_champion"] == "none"
    second = evidence_of(client, retrain.run_id, tmp_path / "second")
    assert second["previous_champion"] == "1" and second["champion_test_metric"] == "0.800000"
    assert "champion_version" not in second
    assert client.get_model_version("insects", challenger.registration.version).tags["decision"] == "rejected"


def test_the_registered_model_is_a_logged_model_of_the_run_linked_to_its_version(story, released):
    tracking = story[2]
    outcome, _ = released
    client = tracking.client
    version = client.get_model_version("insects", outcome.registration.version)
    models = {m.model_id: m for m in client.search_logged_models([tracking.experiment_id])}
    [linked] = [m for m in models.values() if m.artifact_location == version.source]
    assert linked.status == LoggedModelStatus.READY and linked.source_run_id == tracking.run_id
    assert json.loads(linked.tags["mlflow.modelVersions"]) == [{"name": "insects", "version": version.version}]
    assert version.model_id is None  # an open-source store keeps no model id on a version: the link is above


def test_the_parent_run_and_the_registered_model_describe_themselves(story, released):
    spec, _, tracking, *_, selected = story
    client = tracking.client
    lines = client.get_run(tracking.run_id).data.tags[NOTE_TAG].split("\n\n")
    assert lines == ["**Decision: promoted**: version 1 of `insects` holds `champion`.",
                     "Test accuracy 0.8000 vs target 0.75 (met).",
                     f"Selected stage: {selected.name} (chosen on validation)."]
    description = client.get_registered_model("insects").description
    assert description.startswith(spec.task) and "accuracy >= 0.75" in description


def test_a_tracking_servers_run_page_is_linked_from_the_prefect_run(story):
    tracking = story[2]
    on_server = TrackingRef(tracking.run_id, tracking.experiment_id, "http://mlflow.example:5000")
    url = link_mlflow_run("insects", on_server)
    assert url == (f"http://mlflow.example:5000/#/experiments/{tracking.experiment_id}/runs/{tracking.run_id}"
                   "?workflowType=machine_learning")  # the "Model training" view
    with get_client(sync_client=True) as prefect:
        [artifact] = prefect.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[
            "insects-mlflow-run"])), limit=1)
    assert url in artifact.data
    assert link_mlflow_run("insects", tracking) is None  # a SQLite store has no page to link to
