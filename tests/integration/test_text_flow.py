"""The whole flow on a slice of SMS spam with MiniLM: duplicates dropped before the split,
a per-class contract (recall of spam), and a champion that predicts raw texts."""

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from flows.transfer_learning import transfer_learning
from tests.conftest import write_config
from tests.integration.conftest import csv_slice

pytestmark = pytest.mark.integration


def test_sms_spam_slice_end_to_end(tmp_path, sms_spam):
    data = csv_slice(sms_spam, tmp_path / "sms.csv", {"ham": 140, "spam": 60}, duplicate_rows=12)
    config = write_config(tmp_path, f"""
task: Flag SMS messages that are spam.
metric: {{name: recall, class: spam, target: 0.5}}
data: {{kind: csv_text, path: {data}, classes: [ham, spam]}}
model: {{family: hf_text, name: all-MiniLM-L6-v2, max_tokens: 32}}
train: {{finetune_epochs: 1}}
registry: {{model_name: sms-spam}}
workdir: {tmp_path / 'work'}
""")
    summary = transfer_learning(str(config))

    rows = pd.read_csv(data)
    assert len(rows) == 212 and sum(summary.split.sizes.values()) == rows["text"].nunique()  # duplicates dropped
    assert any("no exact duplicates" in w for w in summary.quality.warnings)
    client = MlflowClient(f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}")
    parent = client.get_run(summary.run_id)
    assert parent.data.metrics["test_recall_spam"] == pytest.approx(summary.test.value)
    assert parent.data.params["metric.class"] == "spam"
    version = client.get_model_version("sms-spam", summary.outcome.registration.version)
    assert version.tags["metric"] == "recall_spam"
    assert version.tags["decision"] == ("promoted" if summary.test.value >= 0.5 else "rejected")
    assert summary.outcome.decision.passed == (summary.test.value >= 0.5)

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(summary.outcome.registration.model_uri)
    texts = ["WINNER!! Claim your free prize now, call 09061701461", "Ok, see you at home later"]
    predictions = model.predict(pd.DataFrame({"input": texts}))
    assert list(predictions.columns[:2]) == ["label", "probability"]
    assert predictions["label"].tolist() == ["spam", "ham"]
