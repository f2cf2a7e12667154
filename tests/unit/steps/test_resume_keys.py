"""The resume cache: every cached step's inputs hash (in this process and, to the same key, in
another), `tracking` never enters a key while every other input does, and every cached step's
result survives Prefect's JSON serializer as the same value (never a pickle)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.serializers import JSONSerializer

from tasks.config.loading import load_spec
from tasks.data.split import SplitRef
from tasks.decisions.log import Decisions
from tasks.decisions.tournament import CandidateResult
from tasks.registry.warm_start import StartingPoint
from tasks.reports.data_report import Section
from tasks.steps.base_model import load_base_model, measure_candidates, probe_candidate
from tasks.steps.data import check_label_quality
from tasks.steps.learn import StagePlan, fine_tune_stage, train_baseline
from tasks.steps.refs import BaseModelRef, DatasetRef, QualitySummary, StageResult, TrackingRef
from tasks.steps.resume import ResumeChain, cached, resuming, step_key
from tasks.steps.select import select_on_validation
from tasks.steps.split import audit_label_errors, check_leakage
from tasks.training.fit import EpochRecord
from tasks.training.metrics import Contract, Guard

CONFIG = """
task: Tell ants from bees.
metric: {name: recall, class: bees, target: 0.8}
data: {kind: image_folder, path: data}
model: {candidates: [{family: torchvision, name: mobilenet_v2}, {family: timm, name: tf_efficientnet_lite0}]}
registry: {model_name: insects}
"""


def inputs(tmp_path: Path) -> dict[str, dict[str, object]]:
    """Realistic inputs of every cached step, by the step's function name."""
    (tmp_path / "data" / "ants").mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.yaml").write_text(CONFIG)
    spec = load_spec(tmp_path / "config.yaml")
    one = spec.with_model(spec.candidates[0])
    dataset = DatasetRef(tmp_path / "table.parquet", "f" * 64, ("ants", "bees"), None, ("odd.txt",), ("a (ants): x",))
    split = SplitRef(tmp_path / "manifest.json", "m" * 64, {"train": 8, "val": 2, "test": 2}, "t" * 64,
                     ("note",), "h" * 64)
    contract = Contract(spec.metric, Guard("precision_bees", 0.5, False))
    stage = stage_result(tmp_path)
    tracking = TrackingRef("run", "1", "sqlite:///x.db")
    start = StartingPoint("3", tmp_path / "w.pt", "s" * 64)
    measured = CandidateResult("torchvision:mobilenet_v2", 10, 1280, 12.5, None, None, None, False, "eligible", 1.0)
    return {
        "check_label_quality": {"spec": spec, "dataset": dataset, "folder": tmp_path / "report"},
        "audit_label_errors": {"spec": spec, "dataset": dataset, "split": split, "tracking": tracking,
                               "folder": tmp_path / "report"},
        "check_leakage": {"spec": spec, "dataset": dataset, "split": split, "tracking": tracking,
                          "folder": tmp_path / "report"},
        "load_base_model": {"spec": one},
        "measure_candidates": {"spec": spec, "dataset": dataset, "split": split},
        "probe_candidate": {"spec": one, "dataset": dataset, "split": split, "contract": contract,
                            "measured": measured},
        "train_baseline": {"spec": one, "dataset": dataset, "split": split, "tracking": tracking, "start": start,
                           "contract": contract, "class_weights": True, "prefix": ""},
        "fine_tune_stage": {"spec": one, "dataset": dataset, "split": split, "start": stage,
                            "plan": StagePlan(1, "finetune-1", 2), "tracking": tracking, "contract": contract},
        "select_on_validation": {"spec": spec, "stages": [stage], "decisions": Decisions([{"stage": "s"}]),
                                 "tracking": tracking, "contract": contract, "classes": ["ants", "bees"]},
    }


CACHED = {task.fn.__name__: task for task in (check_label_quality, audit_label_errors, check_leakage, load_base_model,
                                              measure_candidates, probe_candidate, train_baseline, fine_tune_stage,
                                              select_on_validation)}


def stage_result(tmp_path: Path) -> StageResult:
    history = [EpochRecord(1, 0.7, 0.6, {"recall_bees": 0.5, "precision_bees": 0.25}, 0.5),
               EpochRecord(2, 0.5, 0.4, {"recall_bees": 0.1 + 0.2, "precision_bees": 1 / 3}, 0.1 + 0.2)]
    return StageResult("finetune-1", "child", 0.1 + 0.2, {"recall_bees": 0.1 + 0.2}, tmp_path / "finetune-1.pt",
                       "c" * 64, history, "notes", True, False, "champion v3", 2, True, 3,
                       {"class": "bees", "threshold": 0.37})


def test_every_cached_steps_inputs_hash_and_tracking_is_left_out_of_the_key(tmp_path):
    for name, values in inputs(tmp_path).items():
        task = CACHED[name]
        assert set(values) == set(task.fn.__code__.co_varnames[:task.fn.__code__.co_argcount]), name
        key = step_key(task.fn, values)
        if "tracking" in values:
            assert step_key(task.fn, {**values, "tracking": TrackingRef("other", "2", "http://x")}) == key, name
        for field, value in values.items():  # every other input is in the key
            if field == "tracking":
                continue
            changed = altered(value)
            assert changed is not None and changed != value, (name, field)
            assert step_key(task.fn, {**values, field: changed}) != key, (name, field)


def altered(value: object) -> object:
    """The same kind of input with one thing changed."""
    if isinstance(value, Contract):
        return dataclasses.replace(value, guard=None)
    if isinstance(value, StagePlan):
        return dataclasses.replace(value, groups=value.groups + 1)
    if isinstance(value, Decisions):
        return Decisions([*value.entries, {"stage": "another"}])
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = next(f.name for f in dataclasses.fields(value) if isinstance(getattr(value, f.name), str))
        return dataclasses.replace(value, **{name: getattr(value, name) + "x"})
    if hasattr(value, "model_copy"):
        return value.model_copy(update={"task": "Another task."})
    if isinstance(value, bool):
        return not value
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, Path):
        return value / "elsewhere"
    if isinstance(value, list):
        return [*value, value[0]]
    return None


def keys_at(folder: Path) -> dict[str, str]:
    return {name: step_key(CACHED[name].fn, values) for name, values in inputs(folder).items()}


def test_the_keys_are_the_same_in_another_process_with_another_hash_seed(tmp_path):
    script = ("import json, sys; from pathlib import Path; from tests.unit.steps.test_resume_keys import keys_at; "
              f"print(json.dumps(keys_at(Path({str(tmp_path)!r}))))")
    there = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                           cwd=Path(__file__).parents[3], env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert there.returncode == 0, there.stderr[-2000:]
    assert json.loads(there.stdout.splitlines()[-1]) == keys_at(tmp_path)


def test_a_changed_code_version_changes_every_key(tmp_path, monkeypatch):
    import tasks.steps.resume as resume

    values = inputs(tmp_path)
    before = {name: step_key(CACHED[name].fn, v) for name, v in values.items()}
    monkeypatch.setattr(resume, "code_version", lambda: "another version")
    assert all(step_key(CACHED[name].fn, v) != before[name] for name, v in values.items())


@pytest.mark.parametrize("make", [
    lambda tmp: stage_result(tmp),
    lambda tmp: QualitySummary({"ants": 3, "bees": 4}, ("w: x",), True, "", Section("GX", "warn", "s", "b", ("f",))),
    lambda tmp: (SplitRef(tmp / "m.json", "m", {"train": 1}, "t", (), "h", ("w",)), Section("Audit", "ok", "fine")),
    lambda tmp: [CandidateResult("a", 1, 2, 3.5, 4.25, 0.1 + 0.2, None, True, "eligible", 0.3)],
    lambda tmp: BaseModelRef("torchvision", 1280, 19, "torchvision", "mobilenet_v2", "wheel", "w" * 64, 2_000_000),
])
def test_every_cached_result_round_trips_through_json_as_the_same_value(tmp_path, make):
    value = make(tmp_path)
    stored = JSONSerializer().dumps(value)
    json.loads(stored)  # plain JSON: no pickle inside
    back = JSONSerializer().loads(stored)
    if isinstance(value, tuple):  # JSON has no tuple: the flow unpacks it all the same
        back = tuple(back)
    assert back == value and type(back) is type(value)


def test_outside_a_chain_steps_run_uncached_and_inside_one_they_persist_json_in_its_folder(tmp_path):
    assert cached(train_baseline) is train_baseline
    chain = ResumeChain("c", tmp_path / "chain")
    (chain.folder).mkdir()
    with pytest.raises(RuntimeError), resuming(chain):
        task = cached(train_baseline)
        assert task.persist_result and task.result_serializer == "json"
        assert Path(task.result_storage) == chain.results  # type: ignore[arg-type]
        raise RuntimeError("a run stopped by an error keeps its chain")
    assert chain.folder.exists()
    (chain.folder / "chain.json").write_text("{}")
    with resuming(chain):
        pass
    assert not chain.folder.exists()  # a completed run removes its chain
    kept = tmp_path / "not ours"
    kept.mkdir()
    with resuming(ResumeChain("d", kept)):
        pass
    assert kept.exists()  # no chain.json: never removed
