"""A config file read into a Spec, with errors a person can act on.

Relative paths in a config resolve against the config file's folder, so a config works from any
current directory; a `--data` override from the command line resolves against the current one.
A validation error names the file, the field (as the YAML spells it) and the allowed values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from tasks.config.data_kinds import DATA_KINDS
from tasks.config.families import FAMILIES
from tasks.config.spec import DEFAULT_WORKDIR, UNION_TAGS, CandidatesSpec, RuntimeSpec, Spec
from tasks.core.errors import SpecError

DEVICE_VARIABLE = "TRANSFERFLOW_DEVICE"
DEVICES: tuple[str, ...] = get_args(RuntimeSpec.model_fields["device"].annotation)
TASK_RUNNER_VARIABLE = "TRANSFERFLOW_TASK_RUNNER"
TASK_RUNNERS: tuple[str, ...] = get_args(RuntimeSpec.model_fields["task_runner"].annotation)


def load_spec(config_path: str | Path, data_path: str | Path | None = None) -> Spec:
    """Read and validate a config; every problem becomes one SpecError naming file and field."""
    config_path = Path(config_path).expanduser()
    raw = _read_yaml(config_path)
    if data_path is not None:
        raw.setdefault("data", {})
        if isinstance(raw["data"], dict):
            raw["data"]["path"] = str(Path(data_path).expanduser().resolve())
    _resolve_paths(raw, config_path.resolve().parent)
    _runtime_from_environment(raw)
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_format_validation_error(config_path, exc)) from None
    _check_data_path(config_path, spec)
    _check_label_files(config_path, spec)
    return spec


def _runtime_from_environment(raw: dict[str, Any]) -> None:
    """`TRANSFERFLOW_DEVICE` beats `runtime.device`, `TRANSFERFLOW_TASK_RUNNER` beats
    `runtime.task_runner`: one config runs on whatever machine a work pool sends it to (a GPU
    pool's job sets the device), without a copy per machine."""
    for variable, field, allowed in ((DEVICE_VARIABLE, "device", DEVICES),
                                     (TASK_RUNNER_VARIABLE, "task_runner", TASK_RUNNERS)):
        value = os.environ.get(variable, "").strip()
        if not value:
            continue
        if value not in allowed:
            raise SpecError(f"{variable} is '{value}' in the environment. Fix: set it to one of "
                            f"{', '.join(allowed)}, or unset it so the config's runtime.{field} applies.")
        runtime = raw.setdefault("runtime", {})
        if isinstance(runtime, dict):
            runtime[field] = value


def _read_yaml(config_path: Path) -> dict[str, Any]:
    if not config_path.is_file():
        raise SpecError(f"{config_path}: config file not found. Fix: pass the path of a YAML config.")
    try:
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SpecError(f"{config_path}: not valid UTF-8 YAML ({exc}). Fix the syntax there.") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{config_path}: expected a mapping of fields (task, metric, data, model, ...).")
    return raw


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Make data.path and workdir absolute (`~` is the home folder), relative to the config's folder."""
    data = raw.get("data")
    if isinstance(data, dict):
        # the data, given held-out files, the guideline, the labels store
        for field in ("path", "val_path", "test_path", "guideline", "labels_store"):
            if isinstance(data.get(field), str):
                data[field] = _absolute(data[field], base)
        cross_check = data.get("cross_check")
        if isinstance(cross_check, dict) and isinstance(cross_check.get("labels"), str):
            cross_check["labels"] = _absolute(cross_check["labels"], base)
    raw.setdefault("workdir", DEFAULT_WORKDIR)  # unset: beside the config, wherever the command runs from
    if isinstance(raw.get("workdir"), str):
        raw["workdir"] = _absolute(raw["workdir"], base)
    model = raw.get("model")
    if isinstance(model, dict):  # one model, or a tournament's candidates: each block alike
        candidates = model.get("candidates")
        for block in candidates if isinstance(candidates, list) else [model]:
            if isinstance(block, dict):  # a local weights file or model folder, written relative to the config
                for field in ("weights", "name"):
                    if isinstance(block.get(field), str) and block[field].startswith(("./", "../", "~")):
                        block[field] = _absolute(block[field], base)


def _absolute(path: str, base: Path) -> str:
    return str((base / Path(path).expanduser()).resolve())


def _check_data_path(config_path: Path, spec: Spec) -> None:
    data = spec.data
    path = data.path
    if data.written_on_first_run:
        return
    if not path.exists():
        raise SpecError(
            f"{config_path}: data.path '{path}' does not exist. "
            "Fix: point data.path at your data, or pass --data PATH."
        )
    if path.is_dir() != data.PATH_IS_FOLDER:
        raise SpecError(f"{config_path}: data.path '{path}' is not {data.PATH_SHAPE} as data.kind '{data.kind}' "
                        "needs. Fix: point data.path at one, or set data.kind to the kind of data it holds.")
    if problem := data.problem_before_loading():
        raise SpecError(f"{config_path}: {problem}")


def _check_label_files(config_path: Path, spec: Spec) -> None:
    """The guideline and the second labels a config names are files: a missing one fails at step 1,
    not after the data has been read."""
    data = spec.data
    named = [("data.guideline", data.guideline, "write the labelling guideline there (`transferflow init` writes a "
                                                 "starter one), point the field at yours, or remove the field"),
             ("data.cross_check.labels", data.cross_check.labels if data.cross_check else None,
              "point it at the CSV of the second labels, or remove data.cross_check")]
    for field, path, fix in named:
        if path is not None and not path.is_file():
            raise SpecError(f"{config_path}: {field} '{path}' is not a file. Fix: {fix}.")


def _format_validation_error(config_path: Path, exc: ValidationError) -> str:
    lines = [f"{config_path}: invalid config ({exc.error_count()} problem(s)):"]
    for error in exc.errors():
        loc = error["loc"]
        field = ".".join(str(part) for part in _config_path(loc)) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown field; allowed here: {', '.join(_allowed_fields(loc))}"
        elif error["type"] == "missing":
            message = "required field is missing"
        elif error["type"] in ("union_tag_not_found", "union_tag_invalid") and loc[0] in UNION_TAGS:
            tag, members = UNION_TAGS[str(loc[0])]
            field, message = f"{field}.{tag}", f"write one of: {', '.join(sorted(members))}"
        lines.append(f"  - {field}: {message}")
    return "\n".join(lines)


def _config_path(loc: tuple[Any, ...]) -> list[Any]:
    """An error's path as the config spells it: without the tags pydantic adds for the tagged unions
    (for `model:`, `one` or `candidates` right after it and a family name before a model's own
    fields; for `data:`, the kind name before the kind's own fields)."""
    return [part for index, part in enumerate(loc) if not _is_union_tag(loc, index)]


def _is_union_tag(loc: tuple[Any, ...], index: int) -> bool:
    """Whether `loc[index]` is a tag pydantic put in the path rather than a field the config names."""
    part, previous = loc[index], loc[index - 1] if index else None
    if index == 1 and loc[0] == "model" and part in ("one", "candidates"):
        return True
    if index == 1 and loc[0] == "data":
        return part in DATA_KINDS
    return part in FAMILIES and loc[0] == "model" and (
        previous == "one" or (isinstance(previous, int) and loc[1:2] == ("candidates",)))


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    """The field names allowed next to an unknown field, by walking the schema along its path."""
    model: type[BaseModel] = Spec
    for index, part in enumerate(loc[:-1]):
        if isinstance(part, int) or part == "one" or (model is Spec and part in UNION_TAGS):
            continue  # list positions, union tags and the unions themselves (their member comes next)
        if part == "candidates":
            model = CandidatesSpec
            continue
        if _is_union_tag(loc, index):  # a member's name: its own fields are what is allowed
            model = UNION_TAGS[str(loc[0])][1][str(part)]
            continue
        annotation = model.model_fields[str(part)].annotation if str(part) in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return [f.alias or name for name, f in model.model_fields.items()]
