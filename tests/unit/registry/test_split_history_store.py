"""The split history on an MLflow store (a real SQLite store here; the integration test runs it
against a real `mlflow server`): a generation is claimed once, a lost race is reported so the
writer re-reads, two writers agree on one anchor, a workdir history is imported once, and a reset
keeps every earlier generation."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

from tasks.config.spec import SplitSpec
from tasks.data.split import split_examples
from tasks.data.split_history import FolderHistoryStore, History
from tasks.registry.split_history_store import GENERATION_PARAM, HISTORIES_EXPERIMENT, MlflowHistoryStore


def store_pair(tmp_path: Path) -> tuple[MlflowHistoryStore, MlflowHistoryStore]:
    """Two workdirs' views of one MLflow store (separate clients, as two machines have)."""
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    return tuple(MlflowHistoryStore(MlflowClient(uri, uri), "m", tmp_path / name,  # type: ignore[return-value]
                                    FolderHistoryStore(tmp_path / name / "splits" / "m"))
                 for name in ("a", "b"))


def test_a_generation_is_claimed_once_and_the_loser_is_told(tmp_path):
    a, b = store_pair(tmp_path)
    base = a.read()
    assert base.generation == 0 and b.read().generation == 0
    assert a.write(base.next({"x": "train"}))
    assert not b.write(base.next({"y": "test"}))  # read generation 0 too: its claim of 1 loses
    assert b.read().splits == {"x": "train"} and b.read().generation == 1
    assert b.write(b.read().next({"x": "train", "y": "test"}))
    assert a.read().splits == {"x": "train", "y": "test"}
    anchors = a.client.search_runs([a.client.get_experiment_by_name(HISTORIES_EXPERIMENT).experiment_id])
    assert len(anchors) == 1  # both writers use one anchor run
    params = anchors[0].data.params
    assert sorted(k for k in params if k.startswith(GENERATION_PARAM)) == ["generation.000001", "generation.000002"]


def test_two_first_writers_agree_on_one_anchor(tmp_path):
    """b makes its own anchor run but loses the pointer: it deletes that run and uses a's."""
    a, b = store_pair(tmp_path)
    first = a._anchor(create=True)
    assert b._anchor(create=True) == first
    experiment = a.client.get_experiment_by_name(HISTORIES_EXPERIMENT).experiment_id
    assert [r.info.run_id for r in a.client.search_runs([experiment])] == [first]


def test_a_workdir_history_is_imported_once_with_its_id(tmp_path):
    a, b = store_pair(tmp_path)
    examples = pd.DataFrame({"example_id": [f"e{i}" for i in range(60)], "input": "x",
                             "label": ["p", "q"] * 30, "given_split": "", "source": "s"})
    split_examples(examples, SplitSpec(), "fp", a.local.folder)  # a's history, alone in its workdir
    local = json.loads(a.local.path.read_text())
    imported = a.read()
    assert (imported.id, imported.splits, imported.generation) == (local["history"], local["splits"], 1)
    assert b.read() == imported  # the other workdir sees the same history, with no local one
    assert a.read().generation == 1  # imported once


def test_a_reset_is_a_new_generation_and_keeps_the_old_ones(tmp_path):
    a, _ = store_pair(tmp_path)
    assert a.retire() is None  # nothing stored yet
    a.write(History.new().next({"x": "test"}))
    old = a.read()
    assert a.retire() is not None
    fresh = a.read()
    assert fresh.splits == {} and fresh.id != old.id and fresh.generation == old.generation + 1
    anchor = a._anchor(create=False)
    assert anchor is not None
    stored = [f.path for f in a.client.list_artifacts(anchor, "generations")]
    assert len(stored) == 2  # the retired generation is still there
