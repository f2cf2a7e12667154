"""`transferflow validate` then `transferflow run`, as a user would: the embeddings validate
computed for the label audit and the leakage check are in the workdir's cache, so the run
computes none of them again, and its data report is the one validate wrote."""

import pytest
from mlflow import MlflowClient

from tests.integration.conftest import run_transferflow
from tests.integration.test_bad_input import image_config

pytestmark = pytest.mark.integration


def test_the_run_after_validate_reuses_its_embeddings_and_report(tmp_path):
    config = image_config(tmp_path, {"ants": 12, "bees": 12})
    config.write_text(config.read_text().replace("target: 0.9", "target: 0.5"))
    code, output = run_transferflow(["validate", str(config)], cwd=tmp_path)
    assert code == 0, output
    (folder,) = (tmp_path / "work" / "reports" / "ants").iterdir()
    validated = (folder / "report.md").read_text()
    assert not (tmp_path / "work" / "mlflow.db").exists()

    code, output = run_transferflow(["run", str(config)], cwd=tmp_path)
    assert code == 0, output
    client = MlflowClient(f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}")
    runs = [run for run in client.search_runs([e.experiment_id for e in client.search_experiments()])
            if "label_audit_embeddings_computed" in run.data.params]
    assert len(runs) == 1 and runs[0].data.params["label_audit_embeddings_computed"] == "0"
    assert runs[0].data.params["embed_computed"] == "0" and int(runs[0].data.params["embed_examples"]) == 24
    assert (folder / "report.md").read_text() == validated  # same data, same checks, same report
    assert client.list_artifacts(runs[0].info.run_id, "quality")
