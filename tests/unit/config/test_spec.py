from pathlib import Path

import pytest
from pydantic import ValidationError

from tasks.config.data_kinds import DATA_KINDS
from tasks.config.families import families_of
from tasks.config.loading import load_spec
from tasks.config.spec import Spec, json_schema
from tasks.core.errors import SpecError
from tests.conftest import write_config

VALID = """
task: Tell ants from bees.
metric: {{name: {metric}, target: 0.9{extra_metric}}}
data: {{kind: {kind}, path: {path}{extra_data}}}
model: {{family: {family}, name: {model}}}
registry: {{model_name: ants}}
"""


def config(tmp_path: Path, metric="accuracy", extra_metric="", kind="image_folder", path="data",
           family="torchvision", model="mobilenet_v2", tail="", extra_data="") -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    return write_config(tmp_path, VALID.format(metric=metric, extra_metric=extra_metric, kind=kind, path=path,
                                               family=family, model=model, extra_data=extra_data) + tail)


def error_of(path: Path) -> str:
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    return str(caught.value)


def test_valid_config_gets_defaults_and_resolves_paths_against_the_config_folder(tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    spec = load_spec(config(tmp_path))
    assert spec.data.path == (tmp_path / "data").resolve()
    assert spec.workdir == (tmp_path / ".transferflow").resolve()  # unset: beside the config, not the cwd
    assert spec.split.validation_fraction == 0.15 and spec.split.test_fraction == 0.15
    assert spec.finetune.lr_ratio == 0.1 and spec.finetune.early_stopping.patience == 2
    assert spec.runtime.device == "auto" and spec.runtime.num_workers == "auto"
    assert spec.registry.alias == "champion"


def test_spec_is_frozen(tmp_path):
    spec = load_spec(config(tmp_path))
    with pytest.raises(ValidationError, match="frozen"):
        spec.task = "something else"


def test_unknown_field_names_the_field_and_the_allowed_ones(tmp_path):
    message = error_of(config(tmp_path, tail="train: {epochz: 3}\n"))
    assert "train.epochz: unknown field" in message
    assert "head_epochs" in message and str(tmp_path / "config.yaml") in message


def test_unknown_metric_lists_allowed_names(tmp_path):
    message = error_of(config(tmp_path, metric="auc"))
    assert "metric.name" in message and "macro_f1" in message and "balanced_accuracy" in message


def test_per_class_metric_requires_a_class(tmp_path):
    assert "add `class: <label>`" in error_of(config(tmp_path, metric="recall"))
    spec = load_spec(config(tmp_path, metric="recall", extra_metric=", class: bees"))
    assert spec.metric.class_name == "bees" and spec.metric.describe() == "recall of class 'bees' >= 0.9"


def test_aggregate_metric_rejects_a_class(tmp_path):
    assert "remove `class`" in error_of(config(tmp_path, metric="accuracy", extra_metric=", class: bees"))


def test_model_must_match_the_data_modality(tmp_path):
    message = error_of(config(tmp_path, family="hf_text", model="all-MiniLM-L6-v2"))
    assert "model.family 'hf_text' reads texts" in message
    assert "Fix: use a family that reads images: hf_image, timm, torchvision" in message  # the registry's


def test_an_unknown_family_lists_the_registered_ones(tmp_path):
    message = error_of(config(tmp_path, family="keras"))
    assert ("model.family: write one of: hf_audio, hf_image, hf_text, hybrid, mfcc, pixels, spectrogram, tfidf, "
            "timm, torchvision") in message


def test_a_field_of_another_family_is_refused_with_the_familys_own_fields(tmp_path):
    """max_tokens on an image model used to be silently ignored."""
    message = error_of(config(tmp_path, model="mobilenet_v2, max_tokens: 64"))
    assert "model.max_tokens: unknown field; allowed here: family, name, weights, on_unfit, image_size" in message


def test_missing_data_path_names_the_field_and_the_fix(tmp_path):
    message = error_of(config(tmp_path, path="nowhere"))
    assert "data.path" in message and "does not exist" in message and "--data" in message


def test_data_path_override_from_the_command_line(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    assert load_spec(config(tmp_path, path="nowhere"), data_path=other).data.path == other.resolve()


def test_workdir_resolves_against_the_config_folder_and_data_override_against_the_current_one(
        tmp_path, monkeypatch):
    project = tmp_path.resolve() / "project"
    project.mkdir()
    (tmp_path / "elsewhere" / "images").mkdir(parents=True)
    path = config(project, tail="workdir: runs/cache\n")
    monkeypatch.chdir(tmp_path / "elsewhere")
    spec = load_spec(path, data_path="images")
    assert spec.workdir == project / "runs" / "cache"
    assert spec.data.path == tmp_path.resolve() / "elsewhere" / "images"
    assert load_spec(path).data.path == project / "data"


def test_home_folder_is_expanded_in_config_paths_and_the_data_override(tmp_path, monkeypatch):
    home = tmp_path.resolve() / "home"
    (home / "photos").mkdir(parents=True)
    (tmp_path / "configs").mkdir()
    monkeypatch.setenv("HOME", str(home))
    path = config(tmp_path / "configs", path="~/photos", tail="workdir: ~/.transferflow\n")
    spec = load_spec(path)
    assert spec.data.path == home / "photos" and spec.workdir == home / ".transferflow"
    assert load_spec(path, data_path="~/photos").data.path == home / "photos"


SHARED_DATA_FIELDS = ("kind, path, classes, select_classes, duplicates, conflicting_labels, odd_inputs, "
                      "label_issues, leakage, leakage_similarity, exact_search_max, max_drop_fraction, "
                      "min_examples_per_class, "
                      "max_imbalance_ratio, guideline, cross_check, cross_check_policy, cross_check_disagreements, "
                      "labels_store")


@pytest.mark.parametrize("kind, family, model, field, own_fields", [
    ("image_folder", "torchvision", "mobilenet_v2", "split_column", "layout, materialize_from"),
    ("csv_text", "hf_text", "all-MiniLM-L6-v2", "layout", "label_column, split_column, val_path, test_path, "
                                                          "text_column"),
    ("csv_audio", "spectrogram", "mobilenet_v2", "text_column", "label_column, split_column, val_path, test_path, "
                                                                "path_column"),
])
def test_a_field_of_another_kind_is_refused_with_the_kinds_own_fields(tmp_path, kind, family, model, field,
                                                                      own_fields):
    """split_column on image folders (and layout on CSVs) used to be a special-case check."""
    path = config(tmp_path, kind=kind, family=family, model=model)
    path.write_text(path.read_text().replace("path: data}", f"path: data, {field}: x}}"))
    assert f"data.{field}: unknown field; allowed here: {SHARED_DATA_FIELDS}, {own_fields}\n" in error_of(path) + "\n"


def test_an_unknown_kind_lists_the_registered_ones(tmp_path):
    kinds = "data.kind: write one of: audio_folder, csv_audio, csv_text, image_folder"
    assert kinds in error_of(config(tmp_path, kind="parquet"))
    path = config(tmp_path)
    path.write_text(path.read_text().replace("kind: image_folder, ", ""))
    assert kinds in error_of(path)


def test_layout_defaults_to_auto(tmp_path):
    data = load_spec(config(tmp_path)).data
    assert isinstance(data, DATA_KINDS["image_folder"]) and data.layout == "auto"


@pytest.mark.parametrize("kind", sorted(DATA_KINDS))
def test_every_data_kind_has_models_that_read_it(kind):
    options = DATA_KINDS[kind]
    assert families_of(options.MODALITY), f"no registered model family reads {options.MODALITY}s ({kind})"
    assert options.PATH_SHAPE and options.READABLE and isinstance(options.PATH_IS_FOLDER, bool)


def test_a_csv_header_without_a_named_column_fails_when_the_config_loads(tmp_path):
    (tmp_path / "main.csv").write_text("\ufefftext,label\nhello,ham\n", encoding="utf-8")  # a BOM is no column
    (tmp_path / "held.csv").write_text("text,category\nhello,ham\n")
    base = ("task: Flag spam.\nmetric: {name: accuracy, target: 0.9}\n"
            "model: {family: hf_text, name: all-MiniLM-L6-v2}\nregistry: {model_name: m}\n")
    good = write_config(tmp_path, base + "data: {kind: csv_text, path: main.csv}\n")
    assert load_spec(good).data.path.name == "main.csv"
    bad = write_config(tmp_path, base + "data: {kind: csv_text, path: main.csv, test_path: held.csv}\n")
    message = error_of(bad)
    assert str(bad) in message and "held.csv: column(s) ['label'] not found (data.label_column='label')" in message
    assert "['text', 'category']" in message and "Fix: set the field" in message
    no_split = write_config(tmp_path, base + "data: {kind: csv_text, path: main.csv, split_column: fold}\n")
    assert "main.csv: column(s) ['fold'] not found (data.split_column='fold')" in error_of(no_split)


def test_csv_kind_needs_a_file(tmp_path):
    message = error_of(config(tmp_path, kind="csv_text", family="hf_text", model="all-MiniLM-L6-v2"))
    assert "is not a CSV file" in message


def test_missing_required_fields_and_bad_yaml(tmp_path):
    path = write_config(tmp_path, "task: x y z\n")
    message = error_of(path)
    assert "metric: required field is missing" in message and "registry: required field is missing" in message
    broken = write_config(tmp_path, "task: [unclosed\n")
    assert "not valid UTF-8 YAML" in error_of(broken)
    assert "config file not found" in error_of(tmp_path / "absent.yaml")


def test_out_of_range_target(tmp_path):
    path = config(tmp_path)
    path.write_text(path.read_text().replace("target: 0.9", "target: 1.5"))
    assert "metric.target" in error_of(path)


def test_schema_documents_defaults_and_aliases():
    schema = json_schema()
    assert set(schema["required"]) == {"task", "metric", "data", "model", "registry"}
    metric = schema["$defs"]["MetricSpec"]["properties"]
    assert "class" in metric and "class_name" not in metric
    assert schema["$defs"]["FinetuneSpec"]["properties"]["lr_ratio"]["default"] == 0.1


def test_shipped_configs_are_valid():
    for path in sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")):
        spec = Spec.model_validate(__import__("yaml").safe_load(path.read_text()))
        assert spec.task, path


@pytest.mark.parametrize("written, read", [("on", "on"), ("off", "off"), ("auto", "auto"), ("'on'", "on")])
def test_class_weights_on_and_off_survive_yamls_booleans(tmp_path, written, read):
    spec = load_spec(config(tmp_path, tail=f"finetune: {{class_weights: {written}}}\n"))
    assert spec.finetune.class_weights == read
    assert "finetune.class_weights" in error_of(config(tmp_path, tail="finetune: {class_weights: always}\n"))


@pytest.mark.parametrize("old, new_place", [
    ("finetune_epochs: 2", "finetune.epochs_per_stage"),
    ("finetune_lr_divisor: 10", "finetune.lr_ratio"),
    ("patience: 3", "finetune.early_stopping.patience"),
])
def test_a_moved_train_field_names_its_new_place(tmp_path, old, new_place):
    message = error_of(config(tmp_path, tail=f"train: {{{old}}}\n"))
    assert "train:" in message and f"`train.{old.split(':')[0]}` is now `{new_place}`" in message
    assert "move them under `finetune:`" in message


@pytest.mark.parametrize("metric, extra, problem", [
    ("macro_f1", ", guard: {precision: 0.5}", "needs no guard"),
    ("recall", ", class: a, guard: {recall: 0.5}", "guarded by precision"),
    ("precision", ", class: a, guard: {recall: 1.5}", "guarded by recall"),
])
def test_a_guard_must_be_the_complementary_score(tmp_path, metric, extra, problem):
    assert problem in error_of(config(tmp_path, metric=metric, extra_metric=extra))


@pytest.mark.parametrize("metric, extra, problem", [
    ("macro_f1", ", confidence: 0.9", "remove `confidence`"),
    ("f1", ", class: a, confidence: 0.9", "remove `confidence`"),
    ("recall", ", class: a, confidence: 0.4", "confidence"),
    ("recall", ", class: a, confidence: 1.0", "confidence"),
])
def test_a_confidence_belongs_to_recall_or_precision_contracts_and_lies_in_half_to_one(tmp_path, metric, extra,
                                                                                      problem):
    assert problem in error_of(config(tmp_path, metric=metric, extra_metric=extra))


def test_with_model_gives_a_one_model_spec_that_refuses_a_candidate_list(tmp_path):
    """Steps 4-7 take a OneModelSpec (mypy checks every call); a candidate list cannot be one."""
    from tasks.config.families import model_spec
    from tasks.config.spec import OneModelSpec

    images = {"family": "torchvision", "name": "mobilenet_v2"}
    other = {"family": "timm", "name": "tf_efficientnet_lite0"}
    raw = {"task": "ants or bees", "metric": {"name": "accuracy", "target": 0.9},
           "data": {"kind": "image_folder", "path": str(tmp_path)}, "model": {"candidates": [images, other]},
           "registry": {"model_name": "insects"}}
    tournament = Spec.model_validate(raw)
    one = tournament.with_model(model_spec(other))
    assert isinstance(one, OneModelSpec) and one.model == model_spec(other)
    assert one.model_dump(exclude={"model"}) == tournament.model_dump(exclude={"model"})
    assert OneModelSpec.model_validate({**raw, "model": images}).model == model_spec(images)
    with pytest.raises(ValidationError):
        OneModelSpec.model_validate(raw)


def test_relative_weights_of_tournament_candidates_resolve_against_the_configs_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    (folder / "images").mkdir(parents=True)
    config = write_config(folder, """
task: ants or bees
metric: {name: accuracy, target: 0.9}
data: {kind: image_folder, path: images}
model:
  candidates:
    - {family: torchvision, name: mobilenet_v2, weights: ./weights/mine.pth}
    - {family: timm, name: tf_efficientnet_lite0}
registry: {model_name: insects}
""")
    monkeypatch.chdir(tmp_path)  # the command runs elsewhere: the path is the config's, not the cwd's
    spec = load_spec(config)
    assert spec.candidates[0].weights == str((folder / "weights" / "mine.pth").resolve())


def test_the_guideline_and_second_labels_resolve_beside_the_config(tmp_path, monkeypatch):
    (tmp_path / "labeling.md").write_text("# guideline\n")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "second.csv").write_text("path,label\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    spec = load_spec(config(tmp_path, extra_data=", guideline: labeling.md, cross_check: {labels: labels/second.csv}"))
    assert spec.data.guideline == (tmp_path / "labeling.md").resolve()
    cross_check = spec.data.cross_check
    assert cross_check is not None and cross_check.labels == (tmp_path / "labels" / "second.csv").resolve()
    assert spec.data.cross_check.min_kappa == 0.8 and spec.data.cross_check_policy == "fail"
    assert spec.data.cross_check_disagreements == "drop"


@pytest.mark.parametrize(("extra", "field", "fix"), [
    (", guideline: labeling.md", "data.guideline", "write the labelling guideline there (`transferflow init` writes "
                                                   "a starter one)"),
    (", cross_check: {labels: second.csv}", "data.cross_check.labels", "point it at the CSV of the second labels"),
])
def test_a_missing_guideline_or_second_labels_file_names_the_config_the_field_and_the_fix(tmp_path, extra, field,
                                                                                          fix):
    message = error_of(config(tmp_path, extra_data=extra))
    assert message.startswith(f"{tmp_path / 'config.yaml'}: {field} '{tmp_path}/") and "is not a file" in message
    assert f"Fix: {fix}" in message


def test_cross_check_policies_are_checked(tmp_path):
    (tmp_path / "second.csv").write_text("path,label\n")
    message = error_of(config(tmp_path, extra_data=", cross_check: {labels: second.csv, min_kappa: 1.5}, "
                                                   "cross_check_policy: warn"))
    assert "data.cross_check.min_kappa: Input should be less than or equal to 1" in message
    assert "data.cross_check_policy: Input should be 'fail' or 'report'" in message


TOURNAMENT = """
task: Tell ants from bees.
metric: {{name: accuracy, target: 0.9}}
data: {{kind: image_folder, path: data}}
model:
  candidates: [{candidates}]
  {classic}
gate: {{beat_classic: {beat}}}
registry: {{model_name: ants}}
"""


def tournament(tmp_path: Path, candidates="{family: torchvision, name: mobilenet_v2}", classic="", beat="warn"):
    (tmp_path / "data").mkdir(exist_ok=True)
    return write_config(tmp_path, TOURNAMENT.format(candidates=candidates, classic=classic, beat=beat))


def test_a_tournament_includes_its_modalitys_classic_family_last_unless_told_not_to(tmp_path):
    spec = load_spec(tournament(tmp_path))  # one pretrained candidate against the classic one
    assert [m.describe() for m in spec.candidates] == ["torchvision:mobilenet_v2", "pixels"]
    assert spec.candidates[-1].image_size == 32 and spec.gate.beat_classic == "warn"
    listed = load_spec(tournament(tmp_path, "{family: torchvision, name: mobilenet_v2}, "
                                            "{family: pixels, image_size: 16}"))
    assert [m.describe() for m in listed.candidates] == ["torchvision:mobilenet_v2", "pixels"]
    assert listed.candidates[-1].image_size == 16  # the listed one, not a second
    off = tournament(tmp_path, "{family: torchvision, name: mobilenet_v2}, {family: timm, name: tf_efficientnet_lite0}",
                     classic="classic: false")
    assert [m.family for m in load_spec(off).candidates] == ["torchvision", "timm"]
    assert "at least 2 items" in error_of(tournament(tmp_path, classic="classic: false"))


def test_a_classic_family_cannot_come_first_and_the_error_says_what_to_do(tmp_path):
    message = error_of(config(tmp_path, family="pixels", model="pixels"))
    assert "model: the family 'pixels' fits its features on the training split, so it cannot come first" in message
    assert "Fix: name a pretrained model (hf_image, timm, torchvision) first" in message
    message = error_of(tournament(tmp_path, "{family: pixels}, {family: torchvision, name: mobilenet_v2}"))
    assert "model.candidates[0]: the family 'pixels' fits its features" in message
    assert "gate.beat_classic" in error_of(tournament(tmp_path, beat="always"))
