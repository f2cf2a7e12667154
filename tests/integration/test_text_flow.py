"""The whole flow on a slice of SMS spam with MiniLM: duplicates dropped before the split, a
per-class contract (F1 of spam), MLFLOW_TRACKING_URI honoured, the alias moved only on a
pass, a forced fine-tuning stage of the text model, and a metric recomputed independently."""

import json

import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.metrics import f1_score

from flows.transfer_learning import transfer_learning
from tests.integration.conftest import csv_slice, sms_config
from tests.integration.evidence import (
    manifest_splits,
    predict_registered,
    stage_decisions,
    text_labels,
    version_evidence,
)

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """All runs write to the store MLFLOW_TRACKING_URI names, not to the workdir's default. The
    third run sees grown data (a superset of the first CSV): its test split adds fresh examples."""
    from tests.conftest import shared_dataset

    folder = tmp_path_factory.mktemp("text-flow")
    data = csv_slice(shared_dataset("sms_spam") / "sms_spam.csv", folder / "sms.csv",
                     {"ham": 140, "spam": 60}, duplicate_rows=12)
    grown = csv_slice(shared_dataset("sms_spam") / "sms_spam.csv", folder / "sms-grown.csv",
                      {"ham": 170, "spam": 75}, duplicate_rows=12)
    store = f"sqlite:///{folder / 'elsewhere.db'}"
    summaries = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", store)
        patch.chdir(folder)  # MLflow's default artifact root (./mlruns) lands in the test's folder
        for name, csv, target, head_epochs, lr in [("pass", data, 0.5, 60, 0.003), ("finetune", data, 0.99, 1, 1e-6),
                                                   ("grown", grown, 0.5, 60, 0.003)]:
            (folder / name).mkdir()
            # The forced fine-tuning run weights the rare spam class from its baseline on.
            weights = "on" if name == "finetune" else "auto"
            # on_unfit: stop: these runs are about the stages (test_classic_anchor hands an unfit model over)
            config = sms_config(folder / name, csv, folder / "work", model={"on_unfit": "stop"},
                                metric={"name": "f1", "class": "spam", "target": target},
                                train={"head_epochs": head_epochs, "head_learning_rate": lr},
                                finetune={"max_stages": 1, "epochs_per_stage": 1, "class_weights": weights},
                                gate={"min_fresh_test": 3})
            # The grown data arrives as a scheduled retrain would see it: new data, so it trains.
            summaries[name] = transfer_learning(str(config), trigger="schedule" if name == "grown" else "manual")
    return summaries, MlflowClient(store), grown, folder


def test_duplicates_are_dropped_before_the_split(runs):
    summaries, _, grown, _ = runs
    rows = pd.read_csv(grown.with_name("sms.csv"))
    manifest = json.loads(summaries["pass"].split.manifest_path.read_text())
    dropped = [i for drop in manifest.get("dropped", []) for i in drop["ids"]]  # e.g. near-copies (data.leakage)
    assert len(rows) == 212 and sum(summaries["pass"].split.sizes.values()) + len(dropped) == rows["text"].nunique()
    assert any("no exact duplicates" in w for w in summaries["pass"].quality.warnings)


def test_runs_go_to_the_store_mlflow_tracking_uri_names(runs):
    summaries, client, _, folder = runs
    assert client.get_run(summaries["pass"].run_id).data.params["metric.class"] == "spam"
    assert not (folder / "work" / "mlflow.db").exists()


def test_f1_of_spam_recomputed_from_the_registered_model(runs):
    summaries, client, data, _ = runs
    truth = text_labels(data)  # the grown CSV holds every text of the first one
    for summary in summaries.values():
        test_ids = manifest_splits(summary.split.manifest_path)["test"]
        version = client.get_model_version("sms-spam", summary.outcome.registration.version)
        predicted = predict_registered(client, "sms-spam", version.version, [truth[i][0] for i in test_ids])
        recomputed = f1_score([truth[i][1] for i in test_ids], predicted["label"], pos_label="spam")
        assert version_evidence(client, version)["metric"] == "f1_spam"
        assert float(version.tags["test_metric"]) == pytest.approx(recomputed, abs=1e-6)
        assert client.get_run(summary.run_id).data.metrics["test_f1_spam"] == pytest.approx(recomputed)


def test_alias_moves_on_a_pass_and_stays_on_a_rejection(runs):
    """After each run: the champion is the latest version whose test metric met the target."""
    summaries, client, _, _ = runs
    versions = [client.get_model_version("sms-spam", s.outcome.registration.version) for s in summaries.values()]
    decisions = [v.tags["decision"] for v in versions]
    assert decisions[:2] == ["promoted", "rejected"]
    latest_pass = max(int(v.version) for v in versions if v.tags["decision"] == "promoted")
    assert int(client.get_model_version_by_alias("sms-spam", "champion").version) == latest_pass


def test_grown_data_keeps_the_old_test_examples_and_reports_the_fresh_ones(runs):
    """The fresh-only metric is recomputed from the registered model on the test examples that
    the two earlier evaluations never read."""
    summaries, client, data, _ = runs
    truth = text_labels(data)
    old_test = set(manifest_splits(summaries["pass"].split.manifest_path)["test"])
    new_splits = manifest_splits(summaries["grown"].split.manifest_path)
    assert old_test <= set(new_splits["test"])  # no old test example moved
    fresh = sorted(set(new_splits["test"]) - old_test)
    version = client.get_model_version("sms-spam", summaries["grown"].outcome.registration.version)
    evidence = version_evidence(client, version)
    assert evidence["test_examples_fresh"] == str(len(fresh)) and len(fresh) >= 3
    assert evidence["test_examples_seen_before"] == str(len(old_test))
    assert evidence["test_max_prior_uses"] == "2"
    predicted = predict_registered(client, "sms-spam", version.version, [truth[i][0] for i in fresh])
    recomputed = f1_score([truth[i][1] for i in fresh], predicted["label"], pos_label="spam", zero_division=0)
    assert float(evidence["test_fresh_metric"]) == pytest.approx(recomputed, abs=1e-6)


def test_the_grown_run_is_gated_against_the_champion_on_its_own_test_split(runs):
    """The champion (the first run's model) is re-scored on the grown test split; the challenger
    is promoted only if it meets the target and does not fall below that score."""
    summaries, client, data, _ = runs
    truth = text_labels(data)
    test_ids = manifest_splits(summaries["grown"].split.manifest_path)["test"]
    champion = summaries["pass"].outcome.registration.version
    predicted = predict_registered(client, "sms-spam", champion, [truth[i][0] for i in test_ids])
    champion_score = f1_score([truth[i][1] for i in test_ids], predicted["label"], pos_label="spam")
    grown = client.get_model_version("sms-spam", summaries["grown"].outcome.registration.version)
    assert version_evidence(client, grown)["previous_champion"] == champion
    assert float(version_evidence(client, grown)["champion_test_metric"]) == pytest.approx(champion_score, abs=1e-6)
    challenger = float(grown.tags["test_metric"])
    assert grown.tags["decision"] == ("promoted" if challenger >= 0.5 and challenger >= champion_score else "rejected")


def test_text_model_fine_tunes_end_to_end(runs):
    summaries, client, data, _ = runs
    truth = text_labels(data)
    summary = summaries["finetune"]
    # max_stages 1: one stage, run again once because one epoch is too short to tell a gain from
    # none (extend_stage); finetune.class_weights: on weights the baseline and the stages alike
    assert [s.name for s in summary.stages] == ["baseline-weighted", "finetune-1", "finetune-1-extended"]
    experiment = client.get_experiment_by_name("sms-spam").experiment_id
    children = f"tags.`mlflow.parentRunId` = '{summary.run_id}'"
    baseline = client.search_runs([experiment], children + " and tags.stage = 'baseline-weighted'")
    tuned = client.search_runs([experiment], children + " and tags.stage = 'finetune-1'")
    assert len(tuned) == 1 and len(baseline) == 1
    # inverse class frequency over the training split, recomputed from the manifest
    train_ids = manifest_splits(summary.split.manifest_path)["train"]
    labels = pd.Series([truth[i][1] for i in train_ids])
    logged = [float(w) for w in baseline[0].data.params["class_weight_values"].split(",")]
    assert logged[1] / logged[0] == pytest.approx((labels == "ham").sum() / (labels == "spam").sum(), rel=1e-2)
    assert tuned[0].data.params["class_weights"] == "True"
    assert [m.step for m in client.get_metric_history(tuned[0].info.run_id, "val_f1_spam")] == [1]
    decisions = stage_decisions(summary.decisions)
    assert [(d["stage"], d["action"]) for d in decisions][:1] == [("finetune-1", "extend_stage")]
    assert "its best epoch is its last (1 of 1)" in decisions[0]["reason"]  # no gain yet after its one epoch
    assert len(decisions) == 2 and decisions[1]["stage"] == "finetune-1-extended"
    assert decisions[1]["action"] != "extend_stage"  # once only


def test_champion_answers_raw_texts(runs):
    _, client, _, _ = runs
    champion = client.get_model_version_by_alias("sms-spam", "champion").version
    texts = ["WINNER!! Claim your free prize now, call 09061701461", "Ok, see you at home later"]
    predictions = predict_registered(client, "sms-spam", champion, texts)
    assert list(predictions.columns[:2]) == ["label", "probability"]
    assert predictions["label"].tolist() == ["spam", "ham"]
