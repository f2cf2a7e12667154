"""Loading a registered model and reading raw inputs for `transferflow predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.errors import TransferflowError


def load_model(model_uri: str, workdir: Path) -> Any:
    import mlflow
    from mlflow.exceptions import MlflowException

    from tasks.tracking import client_for

    client_for(workdir)
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as exc:
        raise TransferflowError(
            f"cannot load model '{model_uri}' ({str(exc).splitlines()[0]}). Fix: use models:/<name>@<alias> "
            "or models:/<name>/<version> of a registered model, with --workdir or MLFLOW_TRACKING_URI "
            "pointing at its store."
        ) from None


def read_inputs(paths: list[Path], text_column: str) -> list[tuple[str, str]]:
    """(what to show, what the model reads) per input: an image file is read by its absolute
    path and shown by its name; a CSV contributes the texts of its `text_column`."""
    from tasks.data import read_csv

    inputs: list[tuple[str, str]] = []
    for path in paths:
        if not path.exists():
            raise TransferflowError(f"{path}: input not found.")
        if path.suffix.lower() == ".csv":
            frame = read_csv(path)
            if text_column not in frame.columns:
                raise TransferflowError(f"{path}: no column '{text_column}' (columns: {list(frame.columns)}). "
                                        "Fix: pass --column NAME.")
            inputs += [(text[:60], text) for text in frame[text_column].fillna("")]
        else:
            inputs.append((path.name, str(path.resolve())))
    return inputs
