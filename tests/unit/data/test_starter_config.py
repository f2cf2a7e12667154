"""`transferflow init`: the config it writes from the data loads as `run` loads it, names the data's
own classes, and never replaces a file unless asked."""

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.config.loading import load_spec
from tasks.core.errors import SpecError
from tasks.data.starter_config import parse_metric, write_starter_config
from tests.conftest import small_image


def image_folder(root: Path, counts: dict[str, int], split: str | None = None) -> Path:
    for label, n in counts.items():
        folder = root / split / label if split else root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            small_image((16, 16), (i * 7, sum(map(ord, label)) % 256, 40)).save(folder / f"{i}.png")
    (root / (split or "") / next(iter(counts)) / "notes.txt").write_text("not an image")  # counted as no example
    return root


def test_an_image_folder_becomes_a_config_that_loads_with_its_classes_and_metric(tmp_path):
    data = image_folder(tmp_path / "parcels", {"damaged": 4, "intact": 12})
    written = write_starter_config(tmp_path / "parcels.yaml", data, "Flag damaged parcels.", "recall:damaged>=0.9")
    spec = load_spec(written.path)
    assert spec.data.kind == "image_folder" and spec.data.path == data.resolve()
    assert "path: parcels\n" in written.path.read_text()            # inside the config's folder: relative
    assert (spec.metric.name, spec.metric.class_name, spec.metric.target) == ("recall", "damaged", 0.9)
    assert spec.candidates[0].family == "torchvision" and spec.registry.model_name == "parcels"
    assert written.survey.counts == {"damaged": 4, "intact": 12}
    assert len(written.warnings) == 1 and "class 'damaged' has 4 example(s)" in written.warnings[0]


def test_split_folders_count_each_class_across_splits_and_outside_data_is_written_absolute(tmp_path):
    data = image_folder(tmp_path / "data", {"ants": 3, "bees": 2}, split="train")
    image_folder(data, {"ants": 1, "bees": 1}, split="val")
    (tmp_path / "configs").mkdir()
    written = write_starter_config(tmp_path / "configs" / "c.yaml", data, "Tell ants from bees.", "macro_f1>=0.8")
    assert written.survey.counts == {"ants": 4, "bees": 3}
    assert f"path: {data.resolve()}\n" in written.path.read_text() and load_spec(written.path).data.path == data


def test_a_csv_with_other_column_names_needs_them_named_and_then_loads(tmp_path):
    csv = tmp_path / "tickets.csv"
    pd.DataFrame({"body": ["a b", "c d", "e f"], "team": ["billing", "tech", "billing"]}).to_csv(csv, index=False)
    with pytest.raises(SpecError, match=r"no column 'text', 'label'.*\['body', 'team'\].*--text-column <column> "
                                        r"and --label-column <column>"):
        write_starter_config(tmp_path / "t.yaml", csv, "Route tickets.", "accuracy>=0.9")
    assert not (tmp_path / "t.yaml").exists()
    written = write_starter_config(tmp_path / "t.yaml", csv, "Route tickets.", "accuracy>=0.9",
                                   text_column="body", label_column="team")
    spec = load_spec(written.path)
    assert (spec.data.text_column, spec.data.label_column) == ("body", "team")
    assert spec.candidates[0].family == "hf_text" and written.survey.counts == {"billing": 2, "tech": 1}


def test_a_csv_split_column_of_split_names_is_taken_as_given_splits_and_any_other_is_not(tmp_path):
    csv = tmp_path / "given.csv"
    frame = pd.DataFrame({"text": ["a", "b", "c", "d"], "label": ["x", "y", "x", "y"],
                          "split": ["train", "Train ", "validation", "test"]})
    frame.to_csv(csv, index=False)
    spec = load_spec(write_starter_config(tmp_path / "g.yaml", csv, "Tell x from y.", "accuracy>=0.9").path)
    assert spec.data.split_column == "split"
    frame.assign(split=["train", "train", "holdout", "test"]).to_csv(csv, index=False)
    spec = load_spec(write_starter_config(tmp_path / "g.yaml", csv, "Tell x from y.", "accuracy>=0.9",
                                          force=True).path)
    assert spec.data.split_column is None


def test_labels_yaml_would_read_as_booleans_stay_strings(tmp_path):
    csv = tmp_path / "answers.csv"
    pd.DataFrame({"text": ["x", "y", "z"], "label": ["yes", "no", "yes"]}).to_csv(csv, index=False)
    written = write_starter_config(tmp_path / "a.yaml", csv, "Tell yes from no.", "precision:yes>=0.8")
    assert load_spec(written.path).metric.class_name == "yes"


@pytest.mark.parametrize("phrase, expected", [
    ("macro_f1>=0.85", {"name": "macro_f1", "target": 0.85}),
    (" recall:spam >= 0.9 ", {"name": "recall", "class": "spam", "target": 0.9}),
    ("recall(spam)>=0.9", {"name": "recall", "class": "spam", "target": 0.9}),
    ("F1:spam>=0.7", {"name": "f1", "class": "spam", "target": 0.7}),
])
def test_metric_phrases(phrase, expected):
    assert parse_metric(phrase, ["ham", "spam"]) == expected


@pytest.mark.parametrize("phrase, problem", [
    ("recall>=0.9", "recall is about one class. Fix: write it as recall:<class>>=0.9, the class one of ham, spam"),
    ("recall:eggs>=0.9", "the data has no class 'eggs'. Fix: one of ham, spam"),
    ("accuracy:spam>=0.9", "accuracy covers every class. Fix: drop ':spam'"),
    ("auc>=0.9", "unknown metric 'auc'"),
    ("accuracy at least 0.9", "not a metric with its target"),
    ("accuracy>=0.9.1", "'0.9.1' is not a number"),
])
def test_a_metric_phrase_that_cannot_be_a_contract_says_how_to_write_it(phrase, problem):
    with pytest.raises(SpecError, match="Fix") as caught:
        parse_metric(phrase, ["ham", "spam"])
    assert problem in str(caught.value)


def test_an_out_of_range_target_fails_in_the_loaders_words_and_leaves_no_file(tmp_path):
    data = image_folder(tmp_path / "d", {"a": 2, "b": 2})
    with pytest.raises(SpecError, match=r"metric.target"):
        write_starter_config(tmp_path / "c.yaml", data, "Tell a from b.", "accuracy>=1.5")
    assert not (tmp_path / "c.yaml").exists() and not (tmp_path / "labeling.md").exists()


def test_an_existing_file_is_kept_unless_forced(tmp_path):
    data = image_folder(tmp_path / "d", {"a": 2, "b": 2})
    out = tmp_path / "c.yaml"
    out.write_text("mine")
    with pytest.raises(SpecError, match=r"exists\. Fix: choose another --out, or pass --force"):
        write_starter_config(out, data, "Tell a from b.", "accuracy>=0.9")
    assert out.read_text() == "mine"
    with pytest.raises(SpecError, match=rf"(?s){out}: invalid config.*metric.target"):
        write_starter_config(out, data, "Tell a from b.", "accuracy>=1.5", force=True)
    assert out.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "d"]
    write_starter_config(out, data, "Tell a from b.", "accuracy>=0.9", force=True)
    assert load_spec(out).metric.name == "accuracy"


def test_a_starter_guideline_with_a_section_per_class_is_written_beside_the_config_and_named(tmp_path):
    data = image_folder(tmp_path / "d", {"damaged": 2, "intact": 2})
    (tmp_path / "configs").mkdir()
    written = write_starter_config(tmp_path / "configs" / "c.yaml", data, "Flag damaged parcels.", "accuracy>=0.9")
    assert written.guideline == tmp_path / "configs" / "labeling.md" and written.guideline_written
    assert "  guideline: labeling.md\n" in written.path.read_text()
    assert load_spec(written.path).data.guideline == written.guideline
    text = written.guideline.read_text()
    assert text.startswith("# Labelling guideline: Flag damaged parcels.")
    for label in ("damaged", "intact"):
        section = text.split(f"## {label}\n", 1)[1].split("\n## ", 1)[0]
        assert [line for line in section.splitlines() if line.startswith("### ")] == [
            "### What counts", "### Edge cases", "### What does not count"]
        assert section.count("- TODO:") == 3 and f"`{label}`" in section


def test_an_existing_guideline_is_kept_unless_forced(tmp_path):
    data = image_folder(tmp_path / "d", {"a": 2, "b": 2})
    guideline = tmp_path / "labeling.md"
    guideline.write_text("# Ours: a is round, b is square\n")
    kept = write_starter_config(tmp_path / "c.yaml", data, "Tell a from b.", "accuracy>=0.9")
    assert not kept.guideline_written and guideline.read_text() == "# Ours: a is round, b is square\n"
    assert load_spec(kept.path).data.guideline == guideline
    result = CliRunner().invoke(app, ["init", str(data), "--task", "Tell a from b.", "--metric", "accuracy>=0.9",
                                      "--out", str(tmp_path / "c.yaml"), "--force"])
    assert result.exit_code == 0 and f"Wrote {guideline}: a starter labelling guideline" in result.output
    assert guideline.read_text().startswith("# Labelling guideline: Tell a from b.")


@pytest.mark.parametrize("make, problem", [
    (lambda root: root / "absent", "does not exist"),
    (lambda root: image_folder(root / "one", {"only": 3}), "one class only (only)"),
    (lambda root: (root / "empty").mkdir() or root / "empty", "no class folders found"),
])
def test_data_that_cannot_train_a_classifier_is_refused(tmp_path, make, problem):
    with pytest.raises(SpecError, match="Fix") as caught:
        write_starter_config(tmp_path / "c.yaml", make(tmp_path), "Some task.", "accuracy>=0.9")
    assert problem in str(caught.value) and not (tmp_path / "c.yaml").exists()


def test_the_command_prints_what_it_wrote_and_what_to_run_next(tmp_path):
    data = image_folder(tmp_path / "d", {"cats": 2, "dogs": 11})
    out = tmp_path / "pets.yaml"
    result = CliRunner().invoke(app, ["init", str(data), "--task", "Tell cats from dogs.", "--metric",
                                      "f1:cats>=0.8", "--out", str(out), "--name", "pets"])
    assert result.exit_code == 0, result.output
    assert "image_folder, 2 classes, 13 examples" in result.output and "class 'cats' has 2" in result.output
    assert f"transferflow validate {out}" in result.output and load_spec(out).registry.model_name == "pets"
    assert f"Wrote {tmp_path / 'labeling.md'}: a starter labelling guideline, one section per class" in result.output
    again = CliRunner().invoke(app, ["init", str(data), "--task", "x y z", "--metric", "f1:cats>=0.8",
                                     "--out", str(out)])
    assert again.exit_code == 2 and "exists" in again.output and "Traceback" not in again.output
    out.unlink()
    kept = CliRunner().invoke(app, ["init", str(data), "--task", "x y z", "--metric", "f1:cats>=0.8",
                                    "--out", str(out)])
    assert kept.exit_code == 0 and f"Kept the existing {tmp_path / 'labeling.md'}" in kept.output
