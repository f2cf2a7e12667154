"""`transferflow init`: a first config written from the data itself, so a team starts from a file
that loads rather than from the schema.

The data decides the kind (a folder of class folders: `image_folder`, or `audio_folder` when it holds
sound files; a CSV file: `csv_text`, or `csv_audio` when its input column lists sound files), the
classes (folder names, or the CSV's label column) and a base model whose weights ship on this
machine (MobileNetV2 for images, MobileNetV2 on log-mel spectrograms for sound, MiniLM for texts).
The user states the two things only they know: the task in one sentence and the one metric with
its target (`--metric "recall:damaged>=0.9"`).
The file is checked by the same loader `run` uses before `init` reports success, and an existing
file is never overwritten unless asked. Beside it goes a starter labelling guideline, `labeling.md`
(`tasks/data/starter_guideline.py`), which the config names in `data.guideline`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.errors import SpecError

DEFAULT_MODELS: dict[str, dict[str, Any]] = {
    "image": {"family": "torchvision", "name": "mobilenet_v2", "image_size": 224},
    "text": {"family": "hf_text", "name": "all-MiniLM-L6-v2", "max_tokens": 128},
    "audio": {"family": "spectrogram", "name": "mobilenet_v2", "max_seconds": 2.0},
}
# "macro_f1>=0.85", "recall:damaged>=0.9", "recall(damaged) >= 0.9"
METRIC_PHRASE = re.compile(r"^\s*(?P<name>[A-Za-z][A-Za-z0-9_]*)\s*(?:[:(]\s*(?P<cls>[^()]+?)\s*\)?)?"
                           r"\s*>=\s*(?P<target>[0-9.]+)\s*$")
METRIC_EXAMPLES = '"macro_f1>=0.85", "accuracy>=0.9" or "recall:<class>>=0.9"'
SHOWN_CLASSES = 12
GIVEN_SPLIT_COLUMN = "split"  # a CSV column of train / val / test values: taken as the given splits


@dataclass(frozen=True)
class DataSurvey:
    """What `init` found in the data: its kind, its classes with their example counts, and for a
    CSV the text and label columns."""

    kind: str
    modality: str
    counts: dict[str, int]
    columns: dict[str, str]    # text_column / label_column (and split_column) for a CSV; empty for images


@dataclass(frozen=True)
class StarterConfig:
    path: Path
    survey: DataSurvey
    warnings: tuple[str, ...]
    guideline: Path               # the labelling guideline the config names, beside it
    guideline_written: bool       # False: one was there already, and kept


def survey_data(path: Path, text_column: str | None = None, label_column: str | None = None) -> DataSurvey:
    """The kind and classes of the data at `path` (reads a CSV's label column; for images only
    lists the files)."""
    if path.is_dir():
        return _survey_class_folders(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return _survey_csv(path, text_column, label_column)
    what = "does not exist" if not path.exists() else "is neither a folder nor a .csv file"
    raise SpecError(f"{path} {what}. Fix: pass a folder of class folders (<folder>/<label>/<image>, or "
                    "<folder>/<train|val|test>/<label>/<image>) or a CSV file with a text and a label column.")


def _survey_class_folders(path: Path) -> DataSurvey:
    """A folder of class folders, of the class-folder kind (`image_folder`, `audio_folder`, ...) whose
    files it holds most of (ties to the first kind by name)."""
    from tasks.config.data_kinds import DATA_KINDS, ClassFolderOptions
    from tasks.data.readers.class_folders import label_roots
    from tasks.data.table import subdirs

    by_kind: dict[str, dict[str, int]] = {}
    folder_kinds = sorted(name for name, kind in DATA_KINDS.items() if issubclass(kind, ClassFolderOptions))
    for options in (DATA_KINDS[name].model_validate({"kind": name, "path": path}) for name in folder_kinds):
        assert isinstance(options, ClassFolderOptions)
        counts: dict[str, int] = {}
        for _, label_root in label_roots(options):
            for label_dir in subdirs(label_root):
                found = sum(1 for p in label_dir.rglob("*") if p.is_file() and p.suffix.lower() in options.EXTENSIONS)
                counts[label_dir.name] = counts.get(label_dir.name, 0) + found
        by_kind[options.kind] = counts
    kind = max(folder_kinds, key=lambda name: (sum(by_kind[name].values()), -folder_kinds.index(name)))
    if not by_kind[kind]:
        raise SpecError(f"{path}: no class folders found. Fix: lay images or sound files out as {path}/<label>/<file> "
                        f"or {path}/<train|val|test>/<label>/<file>.")
    return DataSurvey(kind, DATA_KINDS[kind].MODALITY, dict(sorted(by_kind[kind].items())), {})


def _survey_csv(path: Path, text_column: str | None, label_column: str | None) -> DataSurvey:
    """A CSV of texts (`csv_text`), or of sound-file paths (`csv_audio`) when every value of its input
    column names a sound file. The input column: --text-column, else `text`, else `path` when the
    file has a `path` column and no `text` one."""
    from tasks.config.data_kinds import modality_of_file
    from tasks.data.table import SPLIT_NAMES, read_csv

    frame = read_csv(path)
    columns = [str(c) for c in frame.columns]
    text = text_column or ("path" if "path" in columns and "text" not in columns else "text")
    label = label_column or "label"
    missing = [f"--{flag} {name}" for flag, name in (("text-column", text), ("label-column", label))
               if name not in columns]
    if missing:
        raise SpecError(f"{path}: no column {', '.join(repr(m.split()[1]) for m in missing)}; the file's columns are "
                        f"{columns}. Fix: name yours with {' and '.join(f'{m.split()[0]} <column>' for m in missing)}.")
    labels = frame[label].dropna()
    counts = labels.astype(str).value_counts().sort_index()
    values = [str(v).strip() for v in frame[text].dropna() if str(v).strip()]
    sounds = bool(values) and all(modality_of_file(Path(v)) == "audio" for v in values)
    columns_found = {"path_column" if sounds else "text_column": text, "label_column": label}
    if GIVEN_SPLIT_COLUMN in columns and frame[GIVEN_SPLIT_COLUMN].fillna("").str.strip().str.lower().isin(
            SPLIT_NAMES).all():
        columns_found["split_column"] = GIVEN_SPLIT_COLUMN   # given splits: respected, test carved if absent
    return DataSurvey("csv_audio" if sounds else "csv_text", "audio" if sounds else "text",
                      {str(k): int(v) for k, v in counts.items()}, columns_found)


def parse_metric(phrase: str, classes: list[str]) -> dict[str, Any]:
    """`name>=target` or `name:class>=target` as the config's `metric:` block; a per-class
    metric's class must be one of the data's."""
    from tasks.config.spec import AGGREGATE_METRICS, PER_CLASS_METRICS

    match = METRIC_PHRASE.match(phrase)
    if match is None:
        raise SpecError(f"--metric '{phrase}': not a metric with its target. Fix: write it as {METRIC_EXAMPLES}.")
    name, cls = match["name"].lower(), match["cls"]
    try:
        target = float(match["target"])
    except ValueError:
        raise SpecError(f"--metric '{phrase}': '{match['target']}' is not a number. Fix: a target such as 0.9.") \
            from None
    if name not in (*AGGREGATE_METRICS, *PER_CLASS_METRICS):
        raise SpecError(f"--metric '{phrase}': unknown metric '{name}'. Fix: one of "
                        f"{', '.join((*AGGREGATE_METRICS, *PER_CLASS_METRICS))}.")
    if name in PER_CLASS_METRICS and cls is None:
        raise SpecError(f"--metric '{phrase}': {name} is about one class. Fix: write it as {name}:<class>>={target:g}, "
                        f"the class one of {_listed(classes)}.")
    if cls is not None and name in AGGREGATE_METRICS:
        raise SpecError(f"--metric '{phrase}': {name} covers every class. Fix: drop ':{cls}'.")
    if cls is not None and cls not in classes:
        raise SpecError(f"--metric '{phrase}': the data has no class '{cls}'. Fix: one of {_listed(classes)}.")
    return {"name": name, **({"class": cls} if cls is not None else {}), "target": target}


def write_starter_config(out: Path, data: Path, task: str, metric: str, model_name: str | None = None,
                         text_column: str | None = None, label_column: str | None = None,
                         force: bool = False) -> StarterConfig:
    """Survey the data, check the config loads as `run` would load it, then write it to `out`
    (atomically; over an existing file only with `force`); return it with warnings about the data.
    The config names a labelling guideline beside it: a starter one is written unless the file is
    there already (then it is kept, or with `force` replaced)."""
    from tasks.config.loading import load_spec
    from tasks.core.atomic import write_text_atomic
    from tasks.data.starter_guideline import GUIDELINE_FILE, starter_guideline

    out, data = out.expanduser().resolve(), data.expanduser().resolve()
    if out.exists() and not force:
        raise SpecError(f"{out} exists. Fix: choose another --out, or pass --force to replace it.")
    survey = survey_data(data, text_column, label_column)
    if len(survey.counts) < 2:
        raise SpecError(f"{data}: one class only ({_listed(list(survey.counts))}). Fix: a classifier needs "
                        "examples of at least two classes.")
    spec: dict[str, Any] = {
        "task": task.strip(),
        "metric": parse_metric(metric, list(survey.counts)),
        "data": {"kind": survey.kind, "path": _relative(data, out.parent), **_non_default_columns(survey),
                 "guideline": GUIDELINE_FILE},
        "model": DEFAULT_MODELS[survey.modality],
        "registry": {"model_name": model_name or _slug(data.stem if data.is_file() else data.name)},
    }
    text = _yaml(spec, survey)
    guideline, guideline_text = out.parent / GUIDELINE_FILE, starter_guideline(task, list(survey.counts))
    existed = guideline.exists()
    if not existed:                # the trial config names it: it must be there to load
        write_text_atomic(guideline, guideline_text)
    trial = out.with_name(f".{out.name}.init-check")  # beside `out`: its relative paths resolve the same
    write_text_atomic(trial, text)
    try:
        load_spec(trial)           # as `run` will load it; a file that fails never replaces `out`
    except SpecError as error:
        if not existed:
            guideline.unlink(missing_ok=True)
        raise SpecError(str(error).replace(str(trial), str(out))) from None
    finally:
        trial.unlink(missing_ok=True)
    write_text_atomic(out, text)
    if existed and force:
        write_text_atomic(guideline, guideline_text)
    return StarterConfig(out, survey, _data_warnings(survey), guideline, not existed or force)


def _data_warnings(survey: DataSurvey) -> tuple[str, ...]:
    from tasks.config.data_kinds.base import DataKindOptions

    needed = DataKindOptions.model_fields["min_examples_per_class"].default
    few = {label: n for label, n in survey.counts.items() if n < needed}
    return tuple(f"class '{label}' has {n} example(s); the quality check asks for {needed} "
                 "(data.min_examples_per_class): add examples, or lower that field" for label, n in few.items())


def _yaml(spec: dict[str, Any], survey: DataSurvey) -> str:
    import yaml

    counts = ", ".join(f"{label} {n}" for label, n in list(survey.counts.items())[:SHOWN_CLASSES])
    more = f", and {len(survey.counts) - SHOWN_CLASSES} more" if len(survey.counts) > SHOWN_CLASSES else ""
    header = (f"# Written by `transferflow init` from the data: {len(survey.counts)} classes ({counts}{more}).\n"
              "# Next: `transferflow validate <this file>` (checks and the data report, no training),\n"
              "# then `transferflow run <this file>`. Every field and default: `transferflow schema`.\n")
    hints = ("\n# Often changed next (defaults shown):\n"
             "# finetune: {max_stages: 3, epochs_per_stage: 3, class_weights: auto}\n"
             "# data: {..., label_issues: report, leakage: drop, duplicates: drop}\n"
             "# train: {batch_size: 32}\n"
             "# workdir: .transferflow    # caches, splits and the MLflow store, beside this file\n")
    return header + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=100) + hints


def _non_default_columns(survey: DataSurvey) -> dict[str, str]:
    defaults = {"text_column": "text", "path_column": "path", "label_column": "label"}
    return {field: column for field, column in survey.columns.items() if column != defaults.get(field)}


def _relative(path: Path, folder: Path) -> str:
    """`path` as the config should write it: relative to the config's folder when it lies inside
    it (the two move together), else absolute. A config's paths resolve against its own folder."""
    return str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.\-]+", "-", name).strip("-._")
    return slug or "model"


def _listed(classes: list[str]) -> str:
    shown = ", ".join(classes[:SHOWN_CLASSES])
    return shown + (f" (and {len(classes) - SHOWN_CLASSES} more)" if len(classes) > SHOWN_CLASSES else "")
