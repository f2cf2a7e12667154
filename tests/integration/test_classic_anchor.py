"""Never lose to a bag of words, through the real flow (Prefect, MLflow, GX) on a text task where
word choice decides (tests/word_choice.py): tickets routed by the letters of a reference code.

- With MiniLM alone and `gate.beat_classic: require`, the tf-idf anchor wins on validation: the run
  says so in one line, the decision log and the card carry it, and the gate refuses to promote a
  model that meets its target, so no alias moves.
- With MiniLM in a tournament (the classic candidate is added by default), tf-idf is chosen,
  registered and promoted, and the served model answers raw text: its test metric is recomputed
  from the registered model's answers.
- With MiniLM alone and a fine-tuning stage that cannot move it (lr_ratio 1e-6), the stage gains
  nothing: under `model.on_unfit: try_candidates` (the default) the hybrid and tf-idf are probed as
  a tournament, the better is trained next, selected and promoted, and the log names each.
- The anchor's validation score is recomputed with scikit-learn on the manifest's ids.
"""

import json

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.metrics import f1_score

from flows.transfer_learning import transfer_learning
from tests.conftest import write_config
from tests.integration.evidence import manifest_splits, predict_registered, text_labels
from tests.word_choice import PRODUCT_LINES, word_choice_csv

pytestmark = pytest.mark.integration

CLASSES = [line.lower() for line in PRODUCT_LINES]
CONFIG = """
task: Route each support ticket to the team that owns the product line its reference names.
metric: {{name: macro_f1, target: {target}}}
data: {{kind: csv_text, path: {data}, classes: [{classes}]}}
model: {model}
finetune: {finetune}
gate: {{beat_classic: {beat}}}
registry: {{model_name: {name}}}
workdir: {workdir}
"""
MINILM = "{family: hf_text, name: all-MiniLM-L6-v2, max_tokens: 48}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tests.conftest import shared_dataset

    folder = tmp_path_factory.mktemp("word-choice")
    data = word_choice_csv(shared_dataset("banking77") / "train.csv", folder / "tickets.csv", per_line=50)
    workdir = folder / "work"
    summaries = {}
    frozen, stuck = "{max_stages: 0}", "{max_stages: 1, epochs_per_stage: 1, lr_ratio: 1.0e-6, class_weights: off}"
    for name, model, target, beat, finetune in [("alone", MINILM, 0.5, "require", frozen),
                                                ("tournament", f"{{candidates: [{MINILM}]}}", 0.85, "warn", frozen),
                                                ("unfit", MINILM, 0.85, "warn", stuck)]:
        (folder / name).mkdir()
        config = write_config(folder / name, CONFIG.format(
            target=target, data=data, classes=", ".join(CLASSES), model=model, beat=beat, finetune=finetune,
            name=f"tickets-{name}", workdir=workdir))
        summaries[name] = transfer_learning(str(config))
    return summaries, MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}"), data


def artifact(client, run_id, path):
    return mlflow.artifacts.load_text(f"{client.get_run(run_id).info.artifact_uri}/{path}")


def test_the_anchor_scores_what_tfidf_and_a_logistic_regression_score_on_validation(runs):
    """Recomputed from the manifest's training and validation ids with scikit-learn's CountVectorizer
    (words 1-2, characters 2-5 within words, each in two training texts at least), one
    TfidfTransformer over both (sublinear tf) and LogisticRegression: the anchor's hashed columns
    are these columns in another order, so the best C scores the same."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
    from sklearn.linear_model import LogisticRegression

    from tasks.training.linear_head import C_GRID

    summaries, client, data = runs
    truth = text_labels(data)
    for summary in summaries.values():
        ids = manifest_splits(summary.split.manifest_path)
        texts = {part: [truth[i][0] for i in ids[part]] for part in ("train", "val")}
        labels = {part: [truth[i][1] for i in ids[part]] for part in ("train", "val")}
        counters = [CountVectorizer(ngram_range=(1, 2), min_df=2),
                    CountVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2)]
        train_counts = hstack([c.fit_transform(texts["train"]) for c in counters]).tocsr()
        tfidf = TfidfTransformer(sublinear_tf=True).fit(train_counts)
        train = tfidf.transform(train_counts)
        val = tfidf.transform(hstack([c.transform(texts["val"]) for c in counters]).tocsr())
        best = max(f1_score(labels["val"], LogisticRegression(C=C, max_iter=1000, random_state=0)
                            .fit(train, labels["train"]).predict(val), average="macro") for C in C_GRID)
        logged = client.get_run(summary.run_id).data
        assert train.shape[1] < 20_000  # all columns kept: the anchor's max_features does not bind
        assert best >= 0.95 and logged.metrics["classic_val_metric"] == pytest.approx(best, abs=1e-6)
        assert logged.params["classic_anchor"] == "tfidf"


def test_minilm_alone_does_not_beat_the_anchor_and_require_blocks_its_promotion(runs):
    summaries, client, _ = runs
    summary = summaries["alone"]
    anchor = client.get_run(summary.run_id).data.metrics["classic_val_metric"]
    assert summary.selected.val_value < anchor  # the sentence embedding misses some codes
    assert summary.test.value >= 0.5  # the target alone would have promoted it
    decision = summary.outcome.decision
    assert not decision.passed and "classic anchor (gate.beat_classic: require): NOT beaten" in decision.reason
    assert client.get_registered_model("tickets-alone").aliases == {}
    entries = json.loads(artifact(client, summary.run_id, "decisions.json"))
    assert entries[0]["stage"] == "classic-anchor" and entries[0]["action"] == "classic_anchor"
    below = [e for e in entries if e["action"] == "below_classic"]
    assert len(below) == 1 and "does not beat the classic anchor tfidf" in below[0]["reason"]
    assert f"{anchor:.4f}" in below[0]["reason"]
    card = artifact(client, summary.run_id, "model_card.md")
    assert "- Classic anchor: tfidf" in card and "does not beat the classic anchor tfidf" in card


def test_in_a_tournament_the_classic_candidate_wins_is_registered_and_answers_raw_text(runs):
    summaries, client, data = runs
    summary = summaries["tournament"]
    table = json.loads(artifact(client, summary.run_id, "tournament/candidates.json"))
    assert [row["model"] for row in table] == ["hf_text:all-MiniLM-L6-v2", "tfidf"]  # added by default
    assert summary.prepared.tournament.chosen.family == "tfidf" and summary.selected.name == "baseline"
    assert summary.decisions[-1]["action"] == "beats_classic"
    assert "is a classic model itself" in summary.decisions[-1]["reason"]
    assert summary.outcome.decision.passed
    version = client.get_model_version_by_alias("tickets-tournament", "champion")
    truth = text_labels(data)
    test_ids = manifest_splits(summary.split.manifest_path)["test"]
    answers = predict_registered(client, "tickets-tournament", version.version, [truth[i][0] for i in test_ids])
    recomputed = f1_score([truth[i][1] for i in test_ids], answers["label"], average="macro")
    assert float(version.tags["test_metric"]) == pytest.approx(recomputed, abs=1e-6)
    probabilities = answers[[f"p_{c}" for c in CLASSES]].to_numpy()
    assert np.allclose(probabilities.sum(1), 1.0, atol=1e-5)


def test_minilm_alone_and_unfit_hands_over_to_the_hybrid_and_tfidf_which_win(runs):
    summaries, client, _ = runs
    summary = summaries["unfit"]
    actions = [(e["stage"], e["action"]) for e in summary.decisions]
    assert ("finetune-1-extended", "stop_no_gain") in actions  # no gain even once extended
    tried = next(e for e in summary.decisions if e["action"] == "try_candidates")
    anchor = client.get_run(summary.run_id).data.metrics["classic_val_metric"]  # recomputed above
    assert "hybrid(hf_text:all-MiniLM-L6-v2 + tfidf) (the configured model's frozen embeddings beside tfidf" \
           in tried["reason"]
    assert f"tfidf (the classic family, its features fitted on this training split): probe macro_f1 {anchor:.4f}" \
           in tried["reason"]  # the same features and logistic regression as the anchor
    table = json.loads(artifact(client, summary.run_id, "tournament/candidates.json"))
    assert [row["model"] for row in table] == ["hf_text:all-MiniLM-L6-v2", "hybrid(hf_text:all-MiniLM-L6-v2 + tfidf)",
                                               "tfidf"]
    minilm, *alternatives = table
    assert all(row["val_value"] > minilm["val_value"] for row in alternatives)
    first = next(row for row in table if row["status"] == "chosen")["model"]  # the best probe: trained first
    handed = [e for e in summary.decisions if e["action"] == "next_candidate"]
    assert len(handed) == 1 and f"(2 of 3) is {first}" in handed[0]["reason"]
    prefix = "hybrid-" if first.startswith("hybrid") else "tfidf-"
    assert summary.selected.name == f"{prefix}baseline" and summary.outcome.decision.passed
    version = client.get_model_version_by_alias("tickets-unfit", "champion")
    assert version.tags["base_model"] != "hf_text:all-MiniLM-L6-v2"
