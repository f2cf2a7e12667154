"""The operating point: the threshold chosen on validation is the one a brute-force search picks,
it is stored in the checkpoint, and the test evaluation and the served pyfunc answer with it
(labels flip exactly where p(class) >= threshold), never re-tuned on test."""

import base64
import json
from pathlib import Path
from statistics import NormalDist

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import binomtest
from sklearn.metrics import precision_recall_fscore_support

from tasks.config.spec import MetricSpec, Spec
from tasks.core.hashing import sha256_file
from tasks.data.split import SplitRef
from tasks.decisions.operating_point import choose_threshold, lower_bound
from tasks.models.checkpoints import Checkpoint, read_checkpoint, save_checkpoint
from tasks.models.classifier import OperatingPoint, apply_operating_point
from tasks.registry.serving import log_and_register
from tasks.steps.refs import DatasetRef, StageResult, TrackingRef
from tasks.training.metrics import Contract, Guard, classification_metrics, contract_for
from tests.registered_models import SMALL_IMAGE_MODEL, open_store, png_base64

CLASSES = ["ants", "bees"]
RECALL_BEES = MetricSpec(name="recall", **{"class": "bees"}, target=0.8)


def wilson_low(successes: int, trials: int, confidence: float) -> float:
    """scipy's two-sided Wilson interval at 2c - 1: its lower end is the one-sided bound at c."""
    if trials == 0:
        return 0.0
    return float(binomtest(successes, trials).proportion_ci(2 * confidence - 1, method="wilson").low)


def brute_force(p: np.ndarray, y: np.ndarray, metric: MetricSpec, floor: float | None,
                bound_of=None) -> float | None:
    """The rule, spelled out: every distinct probability tried with sklearn's scores; a threshold
    meets the target when `bound_of(successes, trials)` of its contract score does (default: the
    score itself)."""
    guard_name = metric.guard_name
    rows = []
    for threshold in sorted(set(p.tolist())):
        answered = p >= threshold
        precision, recall, f1, _ = precision_recall_fscore_support(y, answered, average="binary",
                                                                   zero_division=0)
        scores = {"precision": precision, "recall": recall, "f1": f1}
        hits = int((answered & y).sum())
        trials = {"recall": int(y.sum()), "precision": int(answered.sum())}.get(metric.name)
        scores["bound"] = bound_of(hits, trials) if bound_of and trials is not None else scores[metric.name]
        rows.append((threshold, scores))
    keeping = [(t, s) for t, s in rows if guard_name is None or s[guard_name] >= floor]
    if not keeping:
        return None
    meeting = [(t, s) for t, s in keeping if s["bound"] >= metric.target]
    if meeting:
        return max(meeting, key=lambda r: (r[1][guard_name or "bound"], r[1]["bound"], r[0]))[0]
    return max(keeping, key=lambda r: (r[1]["bound"], r[1][guard_name or "bound"], r[0]))[0]


def synthetic(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """A minority class whose probabilities overlap the others', rounded so that some tie."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    p = 1 / (1 + np.exp(-(2.0 * y - 1.2 + rng.normal(0, 1.1, n))))
    return np.round(p, 2).astype(np.float32), y


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name,target,floor", [
    ("recall", 0.9, 0.45),     # met with the guard: the most precision that keeps recall >= 0.9
    ("recall", 0.99, 0.5),     # the target is out of reach: the best recall that keeps the guard
    ("precision", 0.8, 0.3),   # a precision contract, guarded by recall
    ("f1", 0.6, None),         # no guard: the best f1
    ("recall", 0.9, 1.01),     # no threshold keeps the guard: None, argmax stays
])
def test_the_chosen_threshold_is_the_brute_force_one(seed, name, target, floor):
    """At confidence 0.5 the bound is the validation score itself."""
    p, y = synthetic(seed)
    metric = MetricSpec(name=name, **{"class": "bees"}, target=target, confidence=0.5) if name != "f1" else \
        MetricSpec(name=name, **{"class": "bees"}, target=target)
    guard = Guard(f"{metric.guard_name}_bees", floor, explicit=True) if metric.guard_name else None
    chosen = choose_threshold(p, y, Contract(metric, guard))
    expected = brute_force(p, y, metric, floor)
    assert (chosen.threshold if chosen else None) == expected
    assert chosen is None or chosen.class_name == "bees"


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name,target,floor,confidence", [
    ("recall", 0.85, 0.45, 0.8),
    ("recall", 0.9, 0.45, 0.95),
    ("precision", 0.75, 0.3, 0.8),
    ("precision", 0.97, 0.05, 0.9),  # out of reach: the highest bound, which favours more answers
])
def test_with_a_confidence_the_threshold_is_the_brute_force_one_on_wilson_bounds(seed, name, target, floor,
                                                                                confidence):
    """With a huge test split only validation's noise counts: the bound is scipy's Wilson on the
    validation trials (positives for recall, answers for precision)."""
    p, y = synthetic(seed, n=400)
    metric = MetricSpec(name=name, **{"class": "bees"}, target=target, confidence=confidence)
    guard = Guard(f"{metric.guard_name}_bees", floor, explicit=True)
    chosen = choose_threshold(p, y, Contract(metric, guard), test_to_val=1e12)
    assert chosen is not None
    assert chosen.threshold == brute_force(p, y, metric, floor, bound_of=lambda k, n: wilson_low(k, n, confidence))


def test_the_bound_is_wilson_at_the_combined_sample_size():
    """Validation and test each add sampling noise: with a test split as large as validation the
    bound is Wilson's on half the trials; with a huge test split, Wilson's on validation's own."""
    assert lower_bound(np.array(0.9), np.array(100), 1.0, 0.8) == pytest.approx(wilson_low(45, 50, 0.8))
    assert lower_bound(np.array(0.9), np.array(100), 1e12, 0.8) == pytest.approx(wilson_low(90, 100, 0.8))
    assert lower_bound(np.array(1.0), np.array(20), 1.0, 0.8) == pytest.approx(wilson_low(10, 10, 0.8))
    assert lower_bound(np.array(1.0), np.array(20), 1.0, 0.8) < 0.96   # a perfect score on few is not certain
    assert lower_bound(np.array(0.7), np.array(30), 0.5, 0.5) == pytest.approx(0.7)
    assert lower_bound(np.array(0.7), np.array(0), 1.0, 0.8) == 0.0


def test_a_confidence_buys_a_margin_over_the_target_on_validation():
    """The point-estimate rule stops where validation recall touches the target; at confidence 0.8
    the threshold goes lower, to the fewest bees whose Wilson bound reaches the target, and lower
    still when the test split's own noise is counted too."""
    y = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    p = np.r_[np.linspace(0.95, 0.30, 100), np.linspace(0.60, 0.01, 100)]
    guard = Guard("precision_bees", 0.5, explicit=False)

    def chosen(confidence: float, test_to_val: float) -> float:
        metric = MetricSpec(name="recall", **{"class": "bees"}, target=0.9, confidence=confidence)
        return choose_threshold(p, y, Contract(metric, guard), test_to_val).threshold

    def recall_at(threshold: float) -> float:
        return float((p[:100] >= threshold).mean())

    fewest = min(k for k in range(101) if wilson_low(k, 100, 0.8) >= 0.9)
    assert recall_at(chosen(0.5, 1.0)) == pytest.approx(0.9)
    assert recall_at(chosen(0.8, 1e12)) == pytest.approx(fewest / 100) and fewest > 90
    assert chosen(0.8, 1.0) < chosen(0.8, 1e12) < chosen(0.5, 1.0)


def test_aggregate_contracts_have_no_operating_point():
    assert choose_threshold(np.array([0.2, 0.8]), np.array([False, True]),
                            Contract(MetricSpec(name="macro_f1", target=0.5))) is None


def test_the_class_is_answered_at_the_threshold_and_the_likeliest_other_below_it():
    probabilities = np.array([[0.5, 0.3, 0.2], [0.1, 0.25, 0.65], [0.6, 0.15, 0.25], [0.2, 0.7, 0.1]])
    classes = ["a", "b", "c"]
    assert apply_operating_point(probabilities, classes, None).tolist() == [0, 2, 0, 1]
    assert apply_operating_point(probabilities, classes, OperatingPoint("b", 0.25)).tolist() == [1, 1, 0, 1]
    assert apply_operating_point(probabilities, classes, OperatingPoint("b", 0.75)).tolist() == [0, 2, 0, 0]


# --- the stored threshold at work: a real (tiny) classifier, set on validation, applied at test ---

def colour_images(folder: Path, n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"{seed}-{i}.png"
        path.write_bytes(base64.b64decode(png_base64(tuple(int(c) for c in rng.integers(0, 256, 3)))))
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A workdir as the flow leaves it before step 6b: a table, a split manifest, a parent MLflow run
    and the selected stage's checkpoint (an untrained head, its bias set so that p(bees) straddles
    0.5 on these images, with labels that mostly follow p(bees) but put the boundary lower)."""
    from tasks.models.backbones import load_backbone
    from tasks.models.classifier import Classifier, new_head, predict_proba
    from tasks.models.loader import Batches
    from tasks.registry.tracking import client_for, experiment_id, start_run, tracking_uri

    folder = tmp_path_factory.mktemp("run")
    paths = {name: colour_images(folder, n, seed) for seed, (name, n) in enumerate(
        [("train", 20), ("val", 24), ("test", 24)])}
    backbone = load_backbone(SMALL_IMAGE_MODEL)
    classifier = Classifier(backbone, new_head(backbone.dim, 2, seed=0))
    every = [p for group in paths.values() for p in group]
    with torch.no_grad():
        logits = classifier(backbone.preprocess(every))
        margins = logits[:, 1] - logits[:, 0]
        classifier.head.bias[1] -= margins.median()
        spread = 3 / (margins - margins.median()).abs().max()  # margins in [-3, 3]: p(bees) in [0.05, 0.95]
        classifier.head.weight *= spread
        classifier.head.bias *= spread
    p_bees = predict_proba(classifier, Batches(every, torch.zeros(len(every), dtype=torch.long), 8,
                                               backbone.preprocess))[:, 1]
    # Most bees score below 0.5, so a recall contract needs a threshold well below argmax's.
    noise = np.random.default_rng(0).random(len(every)) < 0.1
    labels = np.where((p_bees > np.quantile(p_bees, 0.25)) ^ noise, "bees", "ants")
    ids = [f"id-{i}" for i in range(len(every))]
    table = pd.DataFrame({"example_id": ids, "input": every, "label": labels})
    table.to_parquet(folder / "table.parquet", index=False)
    counts = {name: len(group) for name, group in paths.items()}
    manifest = folder / "split.json"
    manifest.write_text(json.dumps({"splits": {
        "train": ids[:20], "val": ids[20:44], "test": ids[44:]}}))
    spec = Spec.model_validate({
        "task": "ants or bees, by colour", "metric": {"name": "recall", "class": "bees", "target": 0.9,
                                                   "guard": {"precision": 0.6}},
        "data": {"kind": "image_folder", "path": str(folder)}, "model": SMALL_IMAGE_MODEL.model_dump(),
        "train": {"batch_size": 8}, "registry": {"model_name": "insects"}, "workdir": str(folder / "work")})
    stage_path = save_checkpoint(spec.workdir / "checkpoints" / "baseline.pt", Checkpoint(
        model=SMALL_IMAGE_MODEL, classes=CLASSES, weights=classifier.state_dict(), stage="baseline",
        unfrozen_groups=0, epoch=1))
    selected = StageResult("baseline", "r", 0.5, {}, stage_path, sha256_file(stage_path), [], "", True, False)
    client = client_for(spec.workdir)
    experiment = experiment_id(client, "tests", spec.workdir)
    tracking = TrackingRef(start_run(client, experiment, "parent"), experiment, tracking_uri(spec.workdir))
    dataset = DatasetRef(folder / "table.parquet", "fingerprint", tuple(CLASSES), None, ())
    split = SplitRef(manifest, "sha", counts, "test-fingerprint", (), "history")
    return spec, dataset, split, selected, tracking, table


@pytest.fixture(scope="module")
def thresholded(run):
    from tasks.steps.release import set_operating_point

    spec, dataset, split, selected, tracking, _ = run
    return set_operating_point.fn(spec, dataset, split, selected, tracking, contract_of(spec, dataset, split))


def contract_of(spec, dataset, split):
    """The contract as the flow computes it once, after the split, from the training labels."""
    return contract_for(spec.metric, list(dataset.train_val_examples(split)["train"]["label"]))


def probabilities_of(checkpoint_path: Path, inputs: list[str]) -> np.ndarray:
    from tasks.models.checkpoints import restore_classifier_from
    from tasks.models.classifier import predict_proba
    from tasks.models.loader import Batches

    classifier, _ = restore_classifier_from(checkpoint_path)
    return predict_proba(classifier, Batches(inputs, torch.zeros(len(inputs), dtype=torch.long), 8,
                                             classifier.backbone.preprocess))


def test_the_threshold_is_chosen_on_validation_and_stored_in_a_new_checkpoint(run, thresholded):
    from tasks.registry.tracking import client_for

    spec, dataset, split, selected, tracking, table = run
    val = table.iloc[20:44]
    p_val = probabilities_of(selected.checkpoint, list(val["input"]))
    contract = contract_of(spec, dataset, split)
    assert contract.guard == Guard("precision_bees", 0.6, explicit=True)
    expected = choose_threshold(p_val[:, 1], (val["label"] == "bees").to_numpy(), contract,
                                split.sizes["test"] / split.sizes["val"])
    assert expected is not None and expected.threshold < 0.4  # well below argmax's boundary
    stored = read_checkpoint(thresholded.checkpoint)
    assert stored.operating_point == expected and stored.stage == "baseline"
    assert read_checkpoint(selected.checkpoint).operating_point is None  # the stage's own file is untouched
    assert thresholded.checkpoint_sha256 == sha256_file(thresholded.checkpoint) != selected.checkpoint_sha256
    assert thresholded.operating_point == expected.as_dict()
    logged = client_for(spec.workdir).get_run(tracking.run_id).data
    assert logged.metrics["operating_threshold"] == pytest.approx(expected.threshold)
    # The logged bound is Wilson's: b <= recall with (recall - b)^2 = z^2 b (1 - b) / n, n = bees / 2
    # (a test split as large as validation doubles the variance).
    recall, bound = logged.metrics["val_at_threshold_recall_bees"], logged.metrics["val_at_threshold_lower_bound"]
    bees = int((val["label"] == "bees").sum())
    assert recall == pytest.approx(float((p_val[:, 1][(val["label"] == "bees").to_numpy()] >= expected.threshold)
                                         .mean()))
    z = NormalDist().inv_cdf(spec.metric.confidence)
    assert bound <= recall and (recall - bound) ** 2 == pytest.approx(z * z * bound * (1 - bound) / (bees / 2))


def test_the_test_evaluation_answers_at_the_stored_threshold(run, thresholded):
    from tasks.steps.release import evaluate_once_on_test

    spec, dataset, split, _, tracking, table = run
    point = read_checkpoint(thresholded.checkpoint).operating_point
    test = table.iloc[44:]
    y_true = (test["label"] == "bees").to_numpy().astype(int)
    p_test = probabilities_of(thresholded.checkpoint, list(test["input"]))
    at_threshold = classification_metrics(y_true, (p_test[:, 1] >= point.threshold).astype(int), CLASSES)
    at_argmax = classification_metrics(y_true, p_test.argmax(1), CLASSES)
    assert at_threshold != at_argmax  # the threshold changes answers on these test images

    result = evaluate_once_on_test.fn(spec, dataset, split, thresholded, tracking, contract_of(spec, dataset, split))
    assert result.operating_point == point
    assert result.scores == pytest.approx(at_threshold)
    assert result.guard is not None and result.guard_value == pytest.approx(at_threshold["precision_bees"])


def test_the_served_pyfunc_answers_at_the_stored_threshold(run, thresholded, tmp_path):
    *_, table = run
    point = read_checkpoint(thresholded.checkpoint).operating_point
    store = open_store(tmp_path)
    registration = log_and_register(store.client, store.run_id, read_checkpoint(thresholded.checkpoint), 4,
                                    "insects", "champion", {}, promote=True)
    model = mlflow.pyfunc.load_model(store.client.get_model_version_download_uri("insects", registration.version))
    sent = [base64.b64encode(Path(p).read_bytes()).decode("ascii") for p in table["input"]]
    answers = model.predict(pd.DataFrame({"input": sent}))
    answered_bees = answers["p_bees"] >= point.threshold
    assert (answers["label"] == np.where(answered_bees, "bees", "ants")).all()
    argmax = np.where(answers["p_bees"] > answers["p_ants"], "bees", "ants")
    assert (answers["label"] != argmax).any()  # some answers flipped, exactly those at or above the threshold
    assert (answers["probability"] == np.where(answered_bees, answers["p_bees"], answers["p_ants"])).all()


def test_an_aggregate_contract_leaves_the_selected_stage_unchanged(run):
    from tasks.steps.release import set_operating_point

    spec, dataset, split, selected, tracking, _ = run
    macro = spec.model_copy(update={"metric": MetricSpec(name="macro_f1", target=0.9)})
    contract = contract_of(macro, dataset, split)
    assert set_operating_point.fn(macro, dataset, split, selected, tracking, contract) is selected
