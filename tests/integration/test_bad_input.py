"""Bad input through the real command: one clear message naming the problem, exit code 2,
no traceback, and nothing registered."""

from pathlib import Path

import pytest

from tests.conftest import small_image, write_config
from tests.integration.conftest import run_transferflow

pytestmark = pytest.mark.integration

IMAGE_CONFIG = """
task: Tell ants from bees.
metric: {{name: accuracy, target: 0.9}}
data: {{kind: image_folder, path: {data}, min_examples_per_class: 3}}
model: {{family: torchvision, name: mobilenet_v2, image_size: 32}}
registry: {{model_name: ants}}
workdir: {workdir}
{extra}
"""


def image_folder(root: Path, counts: dict[str, int]) -> Path:
    for label, n in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            small_image((16, 16), (i * 9, sum(map(ord, label)) % 256, 3)).save(root / label / f"{i}.png")
    return root


def run_cli(tmp_path: Path, config: Path) -> tuple[int, str]:
    return run_transferflow(["run", str(config)], cwd=tmp_path)


def assert_nothing_registered(test_folder: Path, store_created: bool) -> None:
    """Look in the store the run would have used (the workdir's `mlflow.db`) and in any other
    MLflow store under the test's folder (its working directory too): no registered model, no
    version. `store_created` says whether the run got as far as opening its store, so a test
    that looks in the wrong place fails instead of passing on an absent file."""
    from mlflow import MlflowClient

    expected = test_folder / "work" / "mlflow.db"
    assert expected.exists() == store_created, f"{expected} exists: {expected.exists()}"
    assert not list(test_folder.rglob("mlruns")), "an MLflow store appeared outside the workdir"
    for database in test_folder.rglob("mlflow.db"):
        client = MlflowClient(f"sqlite:///{database}")
        assert client.search_registered_models() == [] and client.search_model_versions() == []
    if store_created:
        runs = MlflowClient(f"sqlite:///{expected}").search_runs(
            [e.experiment_id for e in MlflowClient(f"sqlite:///{expected}").search_experiments()])
        assert runs and {run.info.status for run in runs} == {"FAILED"}


def image_config(tmp_path: Path, counts: dict[str, int], extra: str = "") -> Path:
    data = image_folder(tmp_path / "data", counts)
    return write_config(tmp_path, IMAGE_CONFIG.format(data=data, workdir=tmp_path / "work", extra=extra))


def test_unknown_config_field(tmp_path):
    code, output = run_cli(tmp_path, image_config(tmp_path, {"ants": 4, "bees": 4}, "shuffle: true"))
    assert code == 2 and "shuffle: unknown field" in output and "Traceback" not in output
    assert_nothing_registered(tmp_path, store_created=False)


def test_missing_data_path(tmp_path):
    config = write_config(tmp_path, IMAGE_CONFIG.format(data=tmp_path / "absent", workdir=tmp_path / "work",
                                                        extra=""))
    code, output = run_cli(tmp_path, config)
    assert code == 2 and "data.path" in output and "does not exist" in output and "Traceback" not in output
    assert_nothing_registered(tmp_path, store_created=False)


def test_corrupt_image_stops_the_run_under_odd_inputs_fail(tmp_path):
    """(The default, `drop`, quarantines it with its reason: tests/unit/audit/test_odd_inputs.py.)"""
    config = image_config(tmp_path, {"ants": 4, "bees": 4})
    config.write_text(config.read_text().replace("min_examples_per_class: 3", "min_examples_per_class: 3, "
                                                 "odd_inputs: fail"))
    (tmp_path / "data" / "ants" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    code, output = run_cli(tmp_path, config)
    assert code == 2 and "label-quality check failed" in output
    assert "ants/broken.jpg (ants): undecodable image" in output
    assert "Traceback" not in output
    assert_nothing_registered(tmp_path, store_created=True)


def test_labellers_who_disagree_too_much_stop_the_run_naming_the_two_classes(tmp_path):
    """A second labeller calls 3 ants bees and 2 bees ants: kappa 0.167, below 0.8. The run stops
    before the split with the pair named; the guideline and the kappa are in its (failed) MLflow run."""
    import hashlib

    from mlflow import MlflowClient

    config = image_config(tmp_path, {"ants": 6, "bees": 6})
    config.write_text(config.read_text().replace("min_examples_per_class: 3", "min_examples_per_class: 3, "
                                                 "guideline: labeling.md, cross_check: {labels: second.csv}"))
    (tmp_path / "labeling.md").write_text("# ants have six legs and no wings\n")
    other = {"ants": "bees", "bees": "ants"}
    swapped = {("ants", 0), ("ants", 1), ("ants", 2), ("bees", 0), ("bees", 1)}
    rows = [f"{label}/{i}.png,{other[label] if (label, i) in swapped else label}"
            for label in ("ants", "bees") for i in range(6)]
    (tmp_path / "second.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    code, output = run_cli(tmp_path, config)
    flat = " ".join(output.split())
    assert code == 2 and "Cohen's kappa 0.167" in flat and "they disagree most on 'ants' vs 'bees' (5 examples)" in flat
    assert "Traceback" not in output and not (tmp_path / "work" / "splits").exists()
    assert_nothing_registered(tmp_path, store_created=True)
    client = MlflowClient(f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    guideline_sha256 = hashlib.sha256((tmp_path / "labeling.md").read_bytes()).hexdigest()
    assert run.data.params["data.guideline_sha256"] == guideline_sha256
    assert round(run.data.metrics["cross_check_kappa"], 3) == 0.167 and run.data.metrics["cross_check_overlap"] == 12


def test_empty_class(tmp_path):
    config = image_config(tmp_path, {"ants": 4, "bees": 4})
    (tmp_path / "data" / "wasps").mkdir()
    code, output = run_cli(tmp_path, config)
    assert code == 2 and "'wasps' (0)" in output and "Traceback" not in output
    assert_nothing_registered(tmp_path, store_created=True)


def test_csv_without_the_label_column(tmp_path):
    data = tmp_path / "texts.csv"
    data.write_text("message,category\nhello,ham\n")
    config = write_config(tmp_path, f"""
task: Flag spam.
metric: {{name: recall, class: spam, target: 0.9}}
data: {{kind: csv_text, path: {data}}}
model: {{family: hf_text, name: all-MiniLM-L6-v2}}
registry: {{model_name: spam}}
workdir: {tmp_path / 'work'}
""")
    code, output = run_cli(tmp_path, config)
    assert code == 2 and "data.text_column='text'" in output and "data.label_column='label'" in output
    assert "['message', 'category']" in output and "Traceback" not in output
    assert_nothing_registered(tmp_path, store_created=False)   # found from the header, before the flow starts


def test_validate_checks_a_good_config_without_training_or_tracking(tmp_path):
    config = image_config(tmp_path, {"ants": 10, "bees": 10})
    (tmp_path / "data" / "ants" / "notes.txt").write_text("not an image")
    (tmp_path / "data" / "README.md").write_text("about the photos")
    code, output = run_transferflow(["validate", str(config)], cwd=tmp_path)
    assert code == 0 and "Ready to run." in output and "train 14, val 3, test 3" in output
    assert "Skipped 1 file(s) outside the class folders: README.md" in output
    assert "1 quarantined: ants/notes.txt (ants): unsupported format (.txt;" in output
    assert not (tmp_path / "work" / "mlflow.db").exists() and not (tmp_path / "work" / "checkpoints").exists()
    # The whole data report, under reports/<model>/<data fingerprint>/, its verdict and path printed.
    (folder,) = (tmp_path / "work" / "reports" / "ants").iterdir()
    assert "Data report: PASS with warnings (odd inputs and conflicting labels" in output
    assert str(folder / "report.md") in output.replace("\n", "").replace(" ", "") or \
        str(folder / "report.md") in output
    assert {"report.md", "label_issues.csv", "leakage_pairs.csv", "gx_results.json", "label_quality.md",
            "taken_out.csv", "outliers.csv"} <= {p.name for p in folder.iterdir()}
    assert (folder / "data_docs" / "index.html").exists()
    report = (folder / "report.md").read_text()
    assert report.startswith("# Data report: PASS") and "ants/notes.txt" in report and "| ants | 10 | 50.0% |" in report


def test_init_writes_a_config_from_the_data_that_validate_accepts(tmp_path):
    image_folder(tmp_path / "data", {"ants": 10, "bees": 10})
    code, output = run_transferflow(["init", "data", "--task", "Tell ants from bees.", "--metric", "recall:bees>=0.8",
                                     "--out", "ants.yaml"], cwd=tmp_path)
    assert code == 0 and "image_folder, 2 classes, 20 examples" in output
    assert (tmp_path / "labeling.md").read_text().count("### What counts") == 2  # a starter guideline, named
    code, output = run_transferflow(["validate", "ants.yaml"], cwd=tmp_path)
    assert code == 0 and "Ready to run." in output and "contract: recall of class 'bees' >= 0.8" in output
    assert "Labelling guideline:" in output and "labeling.md (sha256" in " ".join(output.split())
    assert (tmp_path / ".transferflow" / "reports").is_dir()  # the default workdir, beside the config


def test_validate_exits_non_zero_on_a_failing_policy_and_still_writes_the_report(tmp_path):
    config = image_config(tmp_path, {"ants": 10, "bees": 10})
    config.write_text(config.read_text().replace("min_examples_per_class: 3", "min_examples_per_class: 3, "
                                                 "odd_inputs: fail"))
    (tmp_path / "data" / "bees" / "empty.png").write_bytes(b"")
    code, output = run_transferflow(["validate", str(config)], cwd=tmp_path)
    assert code == 2 and "Ready to run." not in output and "Traceback" not in output
    (folder,) = (tmp_path / "work" / "reports" / "ants").iterdir()
    assert "Data report:" in output and "report.md" in output
    report = (folder / "report.md").read_text()
    assert report.splitlines()[0].startswith("# Data report: FAIL") and "bees/empty.png" in report


def test_the_flow_itself_rejects_a_bad_config_in_its_first_task(tmp_path):
    """Deployments call the flow without the CLI's quick pre-check: step 1 still stops it."""
    from flows.transfer_learning import transfer_learning
    from tasks.core.errors import SpecError

    config = image_config(tmp_path, {"ants": 4, "bees": 4}, "shuffle: true")
    with pytest.raises(SpecError, match="shuffle: unknown field"):
        transfer_learning(str(config))
    assert_nothing_registered(tmp_path, store_created=False)


def test_duplicates_fail_policy_stops_the_flow_naming_the_copies(tmp_path):
    config = image_config(tmp_path, {"ants": 4, "bees": 4}, "")
    config.write_text(config.read_text().replace("min_examples_per_class: 3", "min_examples_per_class: 3, "
                                                 "duplicates: fail"))
    (tmp_path / "data" / "bees" / "copy.png").write_bytes((tmp_path / "data" / "bees" / "1.png").read_bytes())
    code, output = run_cli(tmp_path, config)
    assert code == 2 and "no exact duplicates (policy: fail)" in output and "bees/copy.png" in output
    assert "Traceback" not in output
    assert_nothing_registered(tmp_path, store_created=True)


def test_validate_refuses_a_given_validation_split_that_lacks_a_class(tmp_path):
    """Confirmed by a reviewer: this used to answer "Ready to run." with exit 0."""
    image_folder(tmp_path / "data" / "train", {"ants": 6, "bees": 6})
    image_folder(tmp_path / "data" / "val", {"ants": 6})
    config = write_config(tmp_path, IMAGE_CONFIG.format(data=tmp_path / "data", workdir=tmp_path / "work",
                                                        extra=""))
    code, output = run_transferflow(["validate", str(config)], cwd=tmp_path)
    assert code == 2 and "bees" in output and "Traceback" not in output, output
    assert "Ready to run." not in output


@pytest.mark.parametrize("model, expected", [
    ("{family: torchvision, name: resnet5000}", "model.name 'resnet5000' is not a torchvision classification model"),
    ("{family: torchvision, name: resnet50}", "model.name 'resnet50' (family torchvision): its pretrained weights "
                                              "are not on this machine"),
    ("{family: hf_text, name: all-MiniLM-L6-v2}", "model.family 'hf_text' reads texts but data.kind 'image_folder' "
                                                  "holds images"),
])
def test_validate_refuses_a_model_it_cannot_load_before_reading_the_data(tmp_path, model, expected):
    """An unknown name, weights that are not on this machine (downloads off), the wrong modality:
    one line naming the config and the fix, exit 2, before the data is read."""
    config = image_config(tmp_path, {"ants": 4, "bees": 4})
    config.write_text(config.read_text().replace("{family: torchvision, name: mobilenet_v2, image_size: 32}", model))
    code, output = run_transferflow(["validate", str(config)], cwd=tmp_path, TORCH_HOME=str(tmp_path / "torch"))
    assert code == 2 and expected in output and str(config) in output and "Fix" in output
    assert "Traceback" not in output and "Loaded" not in output
