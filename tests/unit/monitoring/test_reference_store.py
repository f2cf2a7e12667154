"""The drift reference through a real MLflow store: stored compressed (a tf-idf champion's rows are
20,000 wide and mostly zeros), read back exactly, and a reference stored plain by an older version
still read."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from mlflow import MlflowClient

from tasks.monitoring.drift import REFERENCE_DIR, Seen, load_reference, log_reference


def test_sparse_rows_are_stored_compressed_and_read_back_exactly(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("drift", artifact_location=str(tmp_path / "artifacts")))
    rng = np.random.default_rng(0)
    rows = np.zeros((500, 20_000), np.float32)
    for row in rows:  # about 60 non-zero tf-idf weights per text
        row[rng.choice(20_000, 60, replace=False)] = rng.random(60)
    log_reference(client, run.info.run_id, Seen(rows, {"ham": 1.0}, {}), {"classes": ["ham"]})
    stored = [Path(a.path).name for a in client.list_artifacts(run.info.run_id, REFERENCE_DIR)]
    size = next(a.file_size for a in client.list_artifacts(run.info.run_id, REFERENCE_DIR)
                if a.path.endswith("embeddings.npz"))
    assert sorted(stored) == ["embeddings.npz", "reference.json"] and size < rows.nbytes / 10
    read, facts = load_reference(client, run.info.run_id, "version 1")
    assert np.array_equal(read, rows) and read.dtype == np.float32 and facts["n"] == 500


def test_a_reference_stored_plain_by_an_older_version_is_still_read(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("drift", artifact_location=str(tmp_path / "artifacts")))
    rows = np.random.default_rng(1).normal(size=(20, 8)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "embeddings.npy", rows)
        (Path(folder) / "reference.json").write_text('{"n": 20}')
        client.log_artifacts(run.info.run_id, folder, REFERENCE_DIR)
    read, facts = load_reference(client, run.info.run_id, "version 1")
    assert np.array_equal(read, rows) and facts == {"n": 20}
