"""The test ledger in a real SQLite MLflow store: exact counts, even for concurrent runs."""

from concurrent.futures import ThreadPoolExecutor

from tasks.gate import LEDGER_EXPERIMENT, record_test_evaluation
from tasks.tracking import client_for

ARGS = dict(data_fingerprint="d", model_name="m", source_run_id="r", metric_key="accuracy", value=0.9)


def test_concurrent_evaluations_each_get_their_own_position(tmp_path, monkeypatch):
    """Without the lock two runs counting at the same time both report the same number."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = client_for(tmp_path)
    record_test_evaluation(client, tmp_path, "warm-up", **ARGS)  # creates the store and the ledger
    with ThreadPoolExecutor(max_workers=6) as pool:
        counts = list(pool.map(lambda _: record_test_evaluation(client, tmp_path, "test-A", **ARGS), range(6)))
    assert sorted(counts) == list(range(6))
    assert record_test_evaluation(client, tmp_path, "test-A", **ARGS) == 6


def test_ledger_lives_in_the_workdir_store_not_mlflows_global_one(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    global_before = mlflow.get_tracking_uri()
    first, second = tmp_path / "one", tmp_path / "two"
    record_test_evaluation(client_for(first), first, "test-A", **ARGS)
    assert record_test_evaluation(client_for(second), second, "test-A", **ARGS) == 0
    assert client_for(first).get_experiment_by_name(LEDGER_EXPERIMENT) is not None
    assert mlflow.get_tracking_uri() == global_before
