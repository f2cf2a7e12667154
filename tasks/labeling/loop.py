"""The review loop's commands, one function each: build a queue, push it (to Label Studio) or export
it (to a CSV), pull the answers back into the labels store, and say where each queue stands.

A pull that changed anything emits `transferflow.labels.added` for the model, which the retrain
deployments listen for (flows/serve.py, deployments/prefect.yaml): labels that come back start a
gated retrain with no hand edits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from tasks.config.spec import Spec
from tasks.core.errors import DataError
from tasks.data.labels_store import Answer, PullResult, record_answers, second_opinions
from tasks.data.readers import load_examples
from tasks.data.table import LoadedData
from tasks.labeling import label_studio
from tasks.labeling.answers_file import pull_from_file
from tasks.labeling.events import emit_labels_added
from tasks.labeling.queues import (
    CROSS_CHECK_SAMPLE,
    Queue,
    QueueName,
    cross_check_queue,
    incoming_queue,
    latest_batch,
    suspects_queue,
    with_predictions,
)


@dataclass(frozen=True)
class PullSummary:
    result: PullResult
    test_corrections: int   # corrected examples the split holds in test: counted, and they stay in test
    event_sent: bool


def build_queue(spec: Spec, what: QueueName, batch: Path | None = None, loaded: LoadedData | None = None,
                limit: int | None = None) -> Queue:
    """The queue (its first `limit` items: suspects come most suspect first), with the champion's
    predictions on its sighted items when there is a champion."""
    loaded = loaded or load_examples(spec.data)
    if what == "suspects":
        # The model's data reports, one folder per data under it (tasks.reports.data_report.report_folder).
        reports = spec.workdir / "reports" / spec.registry.model_name
        queue = suspects_queue(loaded, spec.data, reports, recorded_splits(spec))
    elif what == "incoming":
        queue = incoming_queue((batch or latest_batch(spec.workdir, spec.registry.model_name)).resolve(), spec.data)
    else:  # a sample no second labeller answered yet, blind: no champion's prediction either
        done = set(second_opinions(spec.data.labels_folder))
        return cross_check_queue(loaded, spec.data, limit or CROSS_CHECK_SAMPLE, spec.split.seed, done)
    queue = replace(queue, items=queue.items[:limit])
    version, predictions = champion_predictions(spec, queue)
    return with_predictions(queue, predictions) if version else queue


def recorded_splits(spec: Spec) -> dict[str, str]:
    """Example id -> split, as the model's split history holds it (empty before the first run)."""
    from tasks.registry.split_history_store import history_store

    return dict(history_store(spec.workdir, spec.registry.model_name).read().splits)


def champion_version(spec: Spec) -> str | None:
    """The registered version the alias points at, or None when there is none yet."""
    from tasks.registry.champion import current_champion
    from tasks.registry.tracking import client_for

    if not _has_store(spec):
        return None
    version = current_champion(client_for(spec.workdir), spec.registry.model_name, spec.registry.alias)
    return str(version.version) if version is not None else None


def champion_predictions(spec: Spec, queue: Queue) -> tuple[str | None, dict[str, tuple[str, float]]]:
    """The champion's (label, probability) for the queue's sighted items only: blind ones are never
    shown to the model, so nothing of its answer can reach a test label."""
    from tasks.registry.predict import ModelInput, predict_in_batches, registered_model

    version = champion_version(spec)
    sighted = [item for item in queue.items if not item.blind]
    if version is None or not sighted:
        return version, {}
    inputs = [ModelInput(Path("queue.csv"), item.input[:60], item.input) if queue.modality == "text"
              else ModelInput(Path(item.input), item.input) for item in sighted]
    with registered_model(f"models:/{spec.registry.model_name}@{spec.registry.alias}", spec.workdir) as model:
        answers = predict_in_batches(model, inputs)
    return version, {item.example_id: (str(label), float(probability)) for item, label, probability
                     in zip(sighted, answers["label"], answers["probability"], strict=True)}


def push(spec: Spec, what: QueueName, batch: Path | None = None, limit: int | None = None) -> label_studio.PushResult:
    studio = label_studio.Studio()  # checked before the data is read
    loaded = load_examples(spec.data)
    queue = build_queue(spec, what, batch, loaded, limit)
    if not queue.items:
        raise DataError(f"{queue.source}: the {what} queue is empty. Fix: nothing to push.")
    with label_studio.server_errors(studio):
        return label_studio.push(studio, spec.registry.model_name, queue, class_names(loaded), spec.data.guideline,
                                 champion_version(spec))


def pull(spec: Spec, config_path: Path, answers_file: Path | None = None) -> PullSummary:
    """Answers from a filled-in CSV (`answers_file`) or from the model's projects on the server."""
    loaded = load_examples(spec.data)
    if answers_file is not None:
        result = pull_from_file(loaded, spec.data, answers_file)
    else:
        result = _pull_from_server(spec, loaded)
    splits = recorded_splits(spec)
    in_test = sum(splits.get(example_id) == "test" for example_id in result.corrected_ids)
    sent = False
    if result.pull is not None and (result.corrected or result.new):  # second opinions alone: nothing to retrain on
        source = str(answers_file) if answers_file else os.environ.get(label_studio.URL_VARIABLE, "label-studio")
        sent = emit_labels_added(spec.registry.model_name, str(config_path.resolve()), result.pull, result.corrected,
                                 result.new, source)
    return PullSummary(result, in_test, sent)


def _pull_from_server(spec: Spec, loaded: LoadedData) -> PullResult:
    studio = label_studio.Studio()
    with label_studio.server_errors(studio):
        found = label_studio.answers(studio, spec.registry.model_name)
    known = set(loaded.table["example_id"].astype(str))
    fresh = [answer for answer in found if answer.example_id not in known]
    with label_studio.server_errors(studio), label_studio.fetched_files(studio, fresh) as files:
        answers = [Answer(f"task {a.task_id}", a.label, a.example_id,
                          None if a.example_id in known else (a.text if a.text is not None
                                                              else str(files.get(a.example_id, ""))),
                          a.who, f"{studio.url}/projects/{a.project_id}", second=a.queue == "cross-check")
                   for a in found]
        return record_answers(loaded, spec.data, answers, f"label-studio {studio.url}", Path.cwd())


def class_names(loaded: LoadedData) -> list[str]:
    return list(loaded.declared_classes or sorted(loaded.table["label"].dropna().astype(str).unique()))


def _has_store(spec: Spec) -> bool:
    """Reading must not create a store: a workdir that never ran has no split and no champion."""
    return bool(os.environ.get("MLFLOW_TRACKING_URI")) or (spec.workdir / "mlflow.db").is_file()
