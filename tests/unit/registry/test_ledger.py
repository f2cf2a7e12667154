"""The test ledger in a real SQLite MLflow store: exposure counted per test example, within one
split history of one model, exactly even for concurrent runs; and the gate's words about it."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tasks.config.spec import MetricSpec
from tasks.decisions.gate import ChampionComparison, Exposure, decide
from tasks.registry.ledger import exposure_of, record_test_evaluation
from tasks.registry.tracking import client_for

TAGS = {"test_fingerprint": "t", "data_fingerprint": "d", "source_run_id": "r"}


@pytest.fixture
def record(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = client_for(tmp_path)

    def record(test_ids, model="m", history="h1"):
        return record_test_evaluation(client, tmp_path, model, history, test_ids, TAGS, "accuracy", 0.9)
    return record


def test_exposure_is_counted_per_example_so_grown_data_does_not_reset_it(record):
    assert record(["a", "b", "c"]) == ({"a": 0, "b": 0, "c": 0}, 0)
    assert record(["a", "b"]) == ({"a": 1, "b": 1}, 1)
    # The data grew: the test split now also holds d and e. a and b keep their history.
    uses, evaluations = record(["a", "b", "c", "d", "e"])
    assert uses == {"a": 2, "b": 2, "c": 1, "d": 0, "e": 0} and evaluations == 2
    assert exposure_of(uses, evaluations) == Exposure(n_test=5, seen_before=3, prior_evaluations=2, max_prior_uses=2)


def test_other_models_and_a_new_split_history_start_from_zero(record):
    record(["a", "b"])
    assert record(["a", "b"], model="other") == ({"a": 0, "b": 0}, 0)
    assert record(["a", "b"], history="h2") == ({"a": 0, "b": 0}, 0)  # after `transferflow split reset`
    assert record(["a"]) == ({"a": 1}, 1)


def test_concurrent_evaluations_each_get_their_own_position(record):
    """Without the lock two runs counting at the same time both report the same number."""
    record(["warm-up"])  # creates the store and the ledger
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda _: record(["x"]), range(6)))
    assert sorted(uses["x"] for uses, _ in results) == list(range(6))
    assert record(["x"])[0] == {"x": 6}


def test_ledger_lives_in_the_workdir_store_not_mlflows_global_one(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    global_before = mlflow.get_tracking_uri()
    first, second = tmp_path / "one", tmp_path / "two"
    record_test_evaluation(client_for(first), first, "m", "h", ["a"], TAGS, "accuracy", 0.9)
    assert record_test_evaluation(client_for(second), second, "m", "h", ["a"], TAGS, "accuracy", 0.9) == (
        {"a": 0}, 0)
    assert mlflow.get_tracking_uri() == global_before


RECALL_SPAM = MetricSpec(name="recall", **{"class": "spam"}, target=0.9)
NO_CHAMPION = ChampionComparison(None, None)


def test_gate_passes_on_the_whole_split_and_states_the_exposure():
    fresh = decide(0.93, RECALL_SPAM, Exposure(750, 0, 0, 0), None, 30, NO_CHAMPION, 0.0)
    assert fresh.passed and fresh.verdict == "promoted"
    assert "0.9300 >= target 0.9" in fresh.reason and "all 750 test examples are fresh" in fresh.reason
    mixed = decide(0.85, RECALL_SPAM, Exposure(750, 612, 3, 2), 0.95, 30, NO_CHAMPION, 0.0)
    assert not mixed.passed and mixed.verdict == "rejected"  # the fresh part's 0.95 is evidence, not the gate
    assert "612 of 750 test examples were used by 3 earlier evaluation(s), up to 2 time(s) each; 138 are fresh" \
        in mixed.reason and "on the 138 fresh examples alone: 0.9500" in mixed.reason
    few = decide(0.93, RECALL_SPAM, Exposure(750, 740, 3, 2), None, 30, NO_CHAMPION, 0.0)
    assert "too few for a fresh-only metric: gate.min_fresh_test is 30" in few.reason
    used_up = decide(0.93, RECALL_SPAM, Exposure(750, 750, 4, 4), None, 30, NO_CHAMPION, 0.0)
    assert used_up.passed and "WARNING" in used_up.reason and "validation set" in used_up.reason


def test_fresh_part_metric_is_the_metric_on_the_never_read_examples_only():
    from sklearn.metrics import recall_score

    from tasks.decisions.gate import fresh_part_metric

    y_true = np.array([1, 1, 1, 1, 0, 0, 1, 1])
    y_pred = np.array([1, 0, 0, 0, 0, 1, 1, 1])
    uses = [0, 2, 1, 1, 0, 3, 0, 0]
    fresh = [i for i, n in enumerate(uses) if n == 0]
    expected = recall_score(y_true[fresh], y_pred[fresh], pos_label=1)
    assert fresh_part_metric(y_true, y_pred, uses, ["ham", "spam"], RECALL_SPAM, min_fresh=4) == pytest.approx(expected)
    assert expected == pytest.approx(1.0) and recall_score(y_true, y_pred) < 0.7  # so the mask matters
    assert fresh_part_metric(y_true, y_pred, uses, ["ham", "spam"], RECALL_SPAM, min_fresh=5) is None
    assert fresh_part_metric(y_true, y_pred, [0] * 8, ["ham", "spam"], RECALL_SPAM, min_fresh=1) is None


def test_a_record_whose_ids_never_landed_is_counted_as_its_runs_whole_test_split(tmp_path, monkeypatch, capsys):
    """A failed upload (a remote artifact store down, or a kill in that window) left a record
    without its ids, and every later evaluation crashed reading it. Now the next one goes on and
    counts it as having read the test split its flow run logged, never fewer."""
    import json

    import tasks.registry.ledger as ledger
    from tasks.registry.tracking import start_run

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = client_for(tmp_path)
    source = start_run(client, client.create_experiment("flows"), "the flow run")
    client.log_text(source, json.dumps({"splits": {"train": ["t"], "val": ["v"], "test": ["a", "b"]}}),
                    "split/abcd-ef.json")
    tags = {**TAGS, "source_run_id": source}
    real_log_text = ledger.log_text

    def upload_fails(*args):
        raise OSError("artifact store unreachable")

    monkeypatch.setattr(ledger, "log_text", upload_fails)
    with pytest.raises(OSError):
        record_test_evaluation(client, tmp_path, "m", "h", ["a", "b"], tags, "accuracy", 0.9)
    monkeypatch.setattr(ledger, "log_text", real_log_text)
    uses, evaluations = record_test_evaluation(client, tmp_path, "m", "h", ["a", "b", "c"], TAGS, "accuracy", 0.9)
    assert uses == {"a": 1, "b": 1, "c": 0} and evaluations == 1
    assert "has no readable test_ids.json: counted as having read its run's whole logged test split" in \
        capsys.readouterr().out
    failed = client.search_runs([client.get_experiment_by_name("transferflow-test-ledger").experiment_id],
                                "tags.test_ids = 'pending'")
    assert [run.info.status for run in failed] == ["FAILED"]


def test_a_record_without_ids_or_a_logged_split_counts_as_reading_everything(record, monkeypatch):
    import tasks.registry.ledger as ledger

    real_log_text = ledger.log_text
    monkeypatch.setattr(ledger, "log_text", lambda *args: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):
        record(["a"])
    monkeypatch.setattr(ledger, "log_text", real_log_text)
    assert record(["a", "z"]) == ({"a": 1, "z": 1}, 1)  # over-counted, never under-counted


def test_a_resumed_runs_repeat_of_the_killed_runs_evaluation_is_neither_recorded_nor_counted_twice(tmp_path,
                                                                                                    monkeypatch):
    from tasks.registry.ledger import LEDGER_EXPERIMENT

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = client_for(tmp_path)

    def evaluate(run: str, checkpoint: str, ids: list[str], repeats: tuple[str, ...] = ()) -> tuple[dict, int]:
        tags = {**TAGS, "source_run_id": run, "checkpoint_sha256": checkpoint}
        return record_test_evaluation(client, tmp_path, "m", "h", ids, tags, "accuracy", 0.9, repeats_runs=repeats)

    def records() -> int:
        return len(client.search_runs([client.get_experiment_by_name(LEDGER_EXPERIMENT).experiment_id]))

    assert evaluate("earlier", "c0", ["a"]) == ({"a": 0, }, 0)
    assert evaluate("killed", "c1", ["a", "b"]) == ({"a": 1, "b": 0}, 1)
    assert records() == 2
    # The resumed run evaluates the same checkpoint on the same ids: the killed run's record is this one.
    assert evaluate("resumed", "c1", ["a", "b"], repeats=("killed",)) == ({"a": 1, "b": 0}, 1)
    assert records() == 2
    # Another checkpoint (or no resume) is another evaluation: recorded, and the killed one counts.
    assert evaluate("resumed", "c2", ["a", "b"], repeats=("killed",)) == ({"a": 2, "b": 1}, 2)
    assert evaluate("other", "c1", ["a", "b"]) == ({"a": 3, "b": 2}, 3)
    assert records() == 4
