"""`transferflow predict`: the user's local files in, a registered model's answers out.

The model gets what a served model gets over HTTP: each image or sound file's bytes
base64-encoded, a CSV's texts as texts, never a path. A CSV is read as the registered model reads
it (`registered_modality`, from the version's metadata before its weights load): for an audio model
its column holds sound-file paths, each relative to the CSV's folder as `kind: csv_audio` reads
them; for another, or when the modality is unknown, it is such a list only if every value names a
sound file, else texts. Looking a model up never creates an MLflow store.
"""

from __future__ import annotations

import base64
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.errors import TransferflowError

if TYPE_CHECKING:
    import pandas as pd

MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))")


@dataclass(frozen=True)
class ModelInput:
    source: Path              # the local file it comes from
    shown: str                # what the results show
    text: str | None = None   # a CSV's text; None for an image file, whose bytes are read when sent
    # Set now, not when asked: checks run while the model's own (possibly older) code is imported.
    modality: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "modality", modality_of(self.source))

    @property
    def value(self) -> str:
        """What the model reads: the text, or the image file's bytes base64-encoded (read only now,
        so a folder of many images is never held in memory at once)."""
        if self.text is not None:
            return self.text
        return base64.b64encode(self.source.read_bytes()).decode("ascii")


def modality_of(path: Path) -> str:
    """A CSV holds texts (or sound-file paths: `_read_csv` decides); another file is of the modality
    whose data kind lists its extension, and an unknown one is taken for an image (refused there)."""
    from tasks.config.data_kinds import modality_of_file

    return "text" if path.suffix.lower() == ".csv" else modality_of_file(path) or "image"


def check_given(paths: list[Path]) -> None:
    """Refuse an empty input list before any model is looked up."""
    if not paths:
        raise TransferflowError("no inputs given. Fix: name image or sound files, folders of them, or CSV files of "
                                "texts or of sound-file paths after the model, e.g. "
                                "`transferflow predict models:/digits@champion digit.png`.")


def read_inputs(paths: list[Path], text_column: str, modality: str | None = None) -> list[ModelInput]:
    """Image files are shown by name, a folder contributes its images (recursively, shown by their
    path inside it), a CSV the values of its `text_column`: texts, or sound files as `modality` (the
    model's, where known) or the values say (see the module docstring). `~` is expanded, since a
    quoted path reaches us unexpanded."""
    check_given(paths)
    inputs: list[ModelInput] = []
    for path in (p.expanduser() for p in paths):
        if path.is_dir():
            inputs += _read_folder(path)
        elif not path.is_file():
            raise TransferflowError(f"{path}: input file not found.")
        else:
            inputs += _read_csv(path, text_column, modality) if modality_of(path) == "text" \
                else [_read_file(path, path.name)]
    return inputs


def _read_folder(folder: Path) -> list[ModelInput]:
    """The folder's files of its most common file modality (a model reads one; the others are
    skipped and listed), images when it holds none."""
    from collections import Counter

    from tasks.config.data_kinds import modality_of_file
    from tasks.data.unlabeled import file_kind, read_input_folder

    counts = Counter(m for p in folder.rglob("*") if p.is_file() and (m := modality_of_file(p)) is not None)
    modality = max(sorted(counts), key=lambda m: counts[m]) if counts else "image"
    found = read_input_folder(folder, modality, f"pass a folder of {file_kind(modality)[1]}s.")
    return [ModelInput(path, shown) for path, shown in zip(found.files, found.relative(), strict=True)]


def _read_csv(path: Path, column: str, modality: str | None) -> list[ModelInput]:
    """A CSV's `column` as texts, or as sound files listed relative to the CSV's folder (shown as
    written): each must be a file inside that folder, of a sound format, that decodes."""
    from tasks.data.listed_files import listed_files
    from tasks.data.unlabeled import file_kind, read_text_column

    values = read_text_column(path, column)
    if not lists_sound_files(values, modality):
        return [ModelInput(path, text[:60], text) for text in values]
    rows = range(2, len(values) + 2)  # as a spreadsheet numbers them (the header is row 1)
    files = listed_files(path, zip(rows, values, strict=True), column, "--column",
                         "or pass --column NAME of the column of sound-file paths.")
    sound_extensions, _, check_sounds_decode = file_kind("audio")
    foreign = [f"row {row}: '{value}'" for row, value, file in zip(rows, values, files, strict=True)
               if file.suffix.lower() not in sound_extensions]
    if foreign:
        raise TransferflowError(f"{path}: {len(foreign)} row(s) of column '{column}' (--column) name no sound file "
                                f"(extensions {', '.join(sound_extensions)}): {'; '.join(foreign[:5])}. "
                                "Fix: list sound files only.")
    check_sounds_decode(files)
    return [ModelInput(file, value) for file, value in zip(files, values, strict=True)]


def lists_sound_files(values: list[str], modality: str | None) -> bool:
    """Whether a CSV column is a list of sound files: always for an audio model (so a bad row is
    named as a bad path); for any other, or an unknown model, when every non-empty value has a sound
    file's extension (so a text model refuses the list instead of reading file names as texts)."""
    from tasks.config.data_kinds import modality_of_file

    if modality == "audio":
        return True
    named = [value.strip() for value in values if value.strip()]
    return bool(named) and all(modality_of_file(Path(value)) == "audio" for value in named)


def _read_file(path: Path, shown: str) -> ModelInput:
    """A single named image or sound file, decoded whole now (sent later)."""
    from tasks.config.data_kinds import file_suffixes
    from tasks.data.unlabeled import file_kind

    extensions, _, check = file_kind(modality_of(path))
    if path.suffix.lower() not in extensions:
        everything = ", ".join(e for suffixes in file_suffixes().values() for e in suffixes)
        raise TransferflowError(f"{path}: not an image or sound file (extensions {everything}). "
                                "Fix: pass image or sound files, or CSV files of texts (with --column).")
    check([path])
    return ModelInput(path, shown)


def predict_in_batches(model: Any, inputs: list[ModelInput], batch_size: int = 64) -> pd.DataFrame:
    """The model's answers for every input, a batch at a time (with a progress bar on stderr for
    large inputs), in input order, with the input shown in the first column."""
    import pandas as pd
    from tqdm.auto import tqdm

    chunks = []
    starts = range(0, len(inputs), batch_size)
    for start in tqdm(starts, desc="predicting", unit="batch", disable=len(starts) < 2):
        batch = inputs[start:start + batch_size]
        chunks.append(model.predict(pd.DataFrame({"input": [item.value for item in batch]})))
    answers = pd.concat(chunks, ignore_index=True)
    answers.insert(0, "input", [item.shown if item.text is None else item.text for item in inputs])
    return answers


def check_can_write(out: Path, force: bool) -> None:
    """Refuse to replace an existing predictions file unless asked (`--force`), as `init` does."""
    if out.exists() and not force:
        raise TransferflowError(f"{out}: the file exists. Fix: pass --force to replace it, or another --out.")


def write_predictions(answers: pd.DataFrame, out: Path) -> Path:
    """The predictions as a CSV, written atomically (a half-written file is never left behind)."""
    from tasks.core.atomic import write_text_atomic

    return write_text_atomic(out, answers.to_csv(index=False))


@contextmanager
def registered_model(model_uri: str, workdir: Path) -> Iterator[Any]:
    """The registered pyfunc, running on the code it was registered with.

    A version carries a copy of the `tasks` package it was built by (its `code/` folder, which
    MLflow puts first on sys.path when it loads the version). While the version loads and answers,
    this process's own `tasks` modules are set aside, so the version imports its own copy, even
    where this transferflow has moved or renamed a module since; they come back afterwards. Use the
    model only inside the block. The version is found through an explicit client for the workdir's
    store (or MLFLOW_TRACKING_URI's, as set): MLflow's own `models:/` lookup uses the process-wide URI."""
    import mlflow
    from mlflow.exceptions import MlflowException

    match = _parsed(model_uri)
    client = _existing_store_client(workdir, model_uri)
    ours = _set_aside("tasks")
    try:
        try:
            model = mlflow.pyfunc.load_model(_download_uri(client, match))
        except (MlflowException, OSError) as exc:
            raise _cannot_load(model_uri, str(exc).splitlines()[0]) from None
        yield model
    finally:
        _set_aside("tasks")
        sys.modules.update(ours)


def registered_modality(model_uri: str, workdir: Path) -> str | None:
    """What the registered version reads ("image", "text", "audio"; None for a version registered
    before versions said so), from its MLmodel file alone: neither its weights nor its code load,
    so the inputs can be read as the model reads them before it loads (a missing file is named
    without waiting for the weights)."""
    import tempfile

    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    match = _parsed(model_uri)
    client = _existing_store_client(workdir, model_uri)
    try:
        with tempfile.TemporaryDirectory() as folder:
            mlmodel = download_artifacts(artifact_uri=f"{_download_uri(client, match)}/MLmodel", dst_path=folder)
            metadata = Model.load(mlmodel).metadata
    except (MlflowException, OSError) as exc:
        raise _cannot_load(model_uri, str(exc).splitlines()[0]) from None
    modality = (metadata or {}).get("input_modality")
    return str(modality) if modality is not None else None


def _parsed(model_uri: str) -> re.Match[str]:
    match = MODEL_URI.fullmatch(model_uri)
    if not match:
        raise _cannot_load(model_uri, "not a registered model's URI")
    return match


def _download_uri(client: Any, match: re.Match[str]) -> str:
    """Where the version of a parsed `models:/` URI (by alias or number) is stored."""
    version = (client.get_model_version_by_alias(match["name"], match["alias"]) if match["alias"]
               else client.get_model_version(match["name"], match["version"]))
    return str(client.get_model_version_download_uri(version.name, version.version))


def _set_aside(package: str) -> dict[str, Any]:
    """Remove `package` and its submodules from the import cache, returning them."""
    names = [name for name in sys.modules if name == package or name.startswith(f"{package}.")]
    return {name: sys.modules.pop(name) for name in names}


def _existing_store_client(workdir: Path, model_uri: str) -> Any:
    """A client for a store that exists: opening a missing SQLite file would create one."""
    from tasks.registry.tracking import client_for

    store = workdir / "mlflow.db"
    if not os.environ.get("MLFLOW_TRACKING_URI") and not store.is_file():
        raise TransferflowError(f"{store}: no MLflow store there, so no model '{model_uri}'. Fix: pass "
                                "--workdir <the workdir of the run that registered it>, or set MLFLOW_TRACKING_URI.")
    return client_for(workdir)


def _cannot_load(model_uri: str, reason: str) -> TransferflowError:
    return TransferflowError(
        f"cannot load model '{model_uri}' ({reason}). Fix: use models:/<name>@<alias> or "
        "models:/<name>/<version> of a registered model, with --workdir or MLFLOW_TRACKING_URI "
        "pointing at its store.")


# What a modality's inputs are called, and how predict takes them (no import: `check_modality` runs
# while the model's own code is imported).
INPUTS_NAMED = {
    "image": ("images", "image files, or folders of them"),
    "audio": ("sound files", "sound files, folders of them, or CSV files listing them (with --column)"),
    "text": ("texts", "CSV files of texts (with --column)"),
}


def check_modality(inputs: list[ModelInput], model: Any, model_uri: str) -> None:
    """Images for an image model, texts for a text model: name the first file that does not fit."""
    expected = (model.metadata.metadata or {}).get("input_modality")
    if expected is None:
        raise TransferflowError(f"'{model_uri}' was registered by an older transferflow, whose models read "
                                "file paths. Fix: register a new version with `transferflow run`.")
    wrong = next((item for item in inputs if item.modality != expected), None)
    if wrong:
        raise TransferflowError(f"{wrong.source}: '{model_uri}' reads {INPUTS_NAMED[expected][0]}, not "
                                f"{INPUTS_NAMED[wrong.modality][0]}. Fix: pass {INPUTS_NAMED[expected][1]}.")
