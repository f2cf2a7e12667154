"""The whole flow on a slice of SMS spam with MiniLM: duplicates dropped before the split, a
per-class contract (F1 of spam), MLFLOW_TRACKING_URI honoured, the alias moved only on a
pass, a forced fine-tuning stage of the text model, and a metric recomputed independently."""

import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.metrics import f1_score

from flows.transfer_learning import transfer_learning
from tests.conftest import write_config
from tests.integration.conftest import csv_slice
from tests.integration.evidence import manifest_splits, predict_registered, text_labels

pytestmark = pytest.mark.integration

CONFIG = """
task: Flag SMS messages that are spam.
metric: {{name: f1, class: spam, target: {target}}}
data: {{kind: csv_text, path: {data}, classes: [ham, spam]}}
model: {{family: hf_text, name: all-MiniLM-L6-v2, max_tokens: 32}}
train: {{head_epochs: {head_epochs}, head_learning_rate: {lr}, finetune_epochs: 1}}
registry: {{model_name: sms-spam}}
workdir: {workdir}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both runs write to the store MLFLOW_TRACKING_URI names, not to the workdir's default."""
    from tests.conftest import shared_dataset

    folder = tmp_path_factory.mktemp("text-flow")
    data = csv_slice(shared_dataset("sms_spam") / "sms_spam.csv", folder / "sms.csv",
                     {"ham": 140, "spam": 60}, duplicate_rows=12)
    store = f"sqlite:///{folder / 'elsewhere.db'}"
    summaries = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", store)
        patch.chdir(folder)  # MLflow's default artifact root (./mlruns) lands in the test's folder
        for name, target, head_epochs, lr in [("pass", 0.5, 60, 0.003), ("finetune", 0.99, 1, 1e-6)]:
            (folder / name).mkdir()
            config = write_config(folder / name, CONFIG.format(target=target, data=data, head_epochs=head_epochs,
                                                               lr=lr, workdir=folder / "work"))
            summaries[name] = transfer_learning(str(config))
    return summaries, MlflowClient(store), data, folder


def test_duplicates_are_dropped_before_the_split(runs):
    summaries, _, data, _ = runs
    rows = pd.read_csv(data)
    assert len(rows) == 212 and sum(summaries["pass"].split.sizes.values()) == rows["text"].nunique()
    assert any("no exact duplicates" in w for w in summaries["pass"].quality.warnings)


def test_runs_go_to_the_store_mlflow_tracking_uri_names(runs):
    summaries, client, _, folder = runs
    assert client.get_run(summaries["pass"].run_id).data.params["metric.class"] == "spam"
    assert not (folder / "work" / "mlflow.db").exists()


def test_f1_of_spam_recomputed_from_the_registered_model(runs):
    summaries, client, data, _ = runs
    truth = text_labels(data)
    test_ids = manifest_splits(summaries["pass"].split.manifest_path)["test"]
    for summary in summaries.values():
        version = client.get_model_version("sms-spam", summary.outcome.registration.version)
        predicted = predict_registered(client, "sms-spam", version.version, [truth[i][0] for i in test_ids])
        recomputed = f1_score([truth[i][1] for i in test_ids], predicted["label"], pos_label="spam")
        assert version.tags["metric"] == "f1_spam"
        assert float(version.tags["test_metric"]) == pytest.approx(recomputed, abs=1e-6)
        assert client.get_run(summary.run_id).data.metrics["test_f1_spam"] == pytest.approx(recomputed)


def test_alias_moves_on_the_pass_and_stays_on_the_rejection(runs):
    summaries, client, _, _ = runs
    passed, rejected = (summaries[name].outcome.registration.version for name in ("pass", "finetune"))
    assert client.get_model_version("sms-spam", passed).tags["decision"] == "promoted"
    assert client.get_model_version("sms-spam", rejected).tags["decision"] == "rejected"
    assert str(client.get_model_version_by_alias("sms-spam", "champion").version) == passed


def test_text_model_fine_tunes_end_to_end(runs):
    summaries, client, _, _ = runs
    summary = summaries["finetune"]
    assert [s.name for s in summary.stages] == ["baseline", "finetune-1"]
    experiment = client.get_experiment_by_name("sms-spam").experiment_id
    tuned = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{summary.run_id}' "
                                             "and tags.stage = 'finetune-1'")
    assert len(tuned) == 1
    assert [m.step for m in client.get_metric_history(tuned[0].info.run_id, "val_f1_spam")] == [1]


def test_champion_answers_raw_texts(runs):
    _, client, _, _ = runs
    champion = client.get_model_version_by_alias("sms-spam", "champion").version
    texts = ["WINNER!! Claim your free prize now, call 09061701461", "Ok, see you at home later"]
    predictions = predict_registered(client, "sms-spam", champion, texts)
    assert list(predictions.columns[:2]) == ["label", "probability"]
    assert predictions["label"].tolist() == ["spam", "ham"]
