"""How a recipe step becomes a Prefect task: named for the UI, not cached or persisted by Prefect
(our caches are content-addressed on disk; a training flow's resume chain turns caching on for the
steps it may reuse, `tasks.steps.resume.cached`), and its prints go to the run's logs. Also what
the Prefect UI shows beside the tasks: the flow run's name and tags, and the artifacts, written
for its renderer (images only by http(s) URL, no links it cannot follow, numbers at 3 significant digits)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from urllib.parse import quote, unquote, urlparse

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from tasks.core.numbers import significant

if TYPE_CHECKING:
    from tasks.steps.refs import TrackingRef

P = ParamSpec("P")
R = TypeVar("R")
RunName = str | Callable[[dict[str, Any]], str]


def step(name: str, run_name: RunName | None = None) -> Callable[[Callable[P, R]], Task[P, R]]:
    """The Prefect task keeps the function's signature, so mypy checks every call a flow makes.
    `run_name` tells apart the runs of a step a flow calls more than once (each fine-tuning stage,
    each candidate's baseline): a template of the call's parameters (`"6 fine-tuning {plan.name}"`)
    or a function of them. Without it a run bears the step's name as it is, not Prefect's
    `<name>-<3 random hex digits>`. It changes no cache key (`tasks.steps.resume.ResumeKey` reads
    inputs only)."""
    named: dict[str, Any] = {"task_run_name": name}
    if isinstance(run_name, str):
        named["task_run_name"] = run_name
    elif run_name is not None:
        template = run_name

        def task_run_name(parameters: dict[str, Any]) -> str:  # Prefect passes the call's parameters by this name
            return template(parameters)

        named["task_run_name"] = task_run_name
    return task(name=name, cache_policy=NO_CACHE, persist_result=False, log_prints=True, **named)


def artifact_key(model_name: str, what: str) -> str:
    """Artifacts sharing a key form one history in the Prefect UI, so keys are per model (and
    keys allow only lowercase letters, digits and dashes)."""
    return f"{model_slug(model_name)}-{_slug(what)}"


def model_slug(model_name: str) -> str:
    """The registry name as Prefect keys and limit names allow it, one-to-one: a name that slugging
    changes (`sms_spam`, `SMS-Spam`) gets a short digest of itself, so it never shares its
    artifacts' history or its concurrency limits with another model (`sms-spam`)."""
    slug = _slug(model_name)
    if slug == model_name:
        return slug
    return f"{slug}-{hashlib.sha256(model_name.encode('utf-8')).hexdigest()[:8]}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def flow_run_name(trigger: str | None = None) -> Callable[[], str]:
    """A flow's `flow_run_name`: `<model>-<trigger>-<UTC stamp>`, the model read from the run's
    `config_path` parameter and the trigger from its `trigger` parameter (or `trigger` itself).
    Prefect names the run with it before the run's first log line ("Beginning flow run ..."), so
    no random name shows anywhere. A config that does not load names the run after its file; the
    flow's first step then reports why it does not load."""

    def name() -> str:
        from prefect.runtime import flow_run

        parameters = flow_run.parameters
        started_by = trigger or str(parameters.get("trigger", "manual"))
        return (f"{_model_name(str(parameters['config_path']), parameters.get('data_path'))}-{started_by}-"
                f"{datetime.now(UTC).strftime('%Y-%m-%d-%H%M%S')}")

    return name


def _model_name(config_path: str, data_path: str | None) -> str:
    from tasks.config.loading import load_spec

    try:
        return load_spec(config_path, data_path).registry.model_name
    except Exception:  # naming must never stop a run: `validate_config`, its first step, says what is wrong
        return Path(config_path).stem


def label_flow_run(model_name: str, trigger: str) -> None:
    """Tag the running flow with the model and what started it (its name says both already,
    `flow_run_name`), so the UI's run list filters by model and trigger."""
    tag_flow_run(f"model:{model_name}", f"trigger:{trigger}")


def tag_flow_run(*tags: str) -> None:
    """Add tags (e.g. the gate's decision) to the running flow."""
    from prefect import get_client
    from prefect.runtime import flow_run

    if flow_run.id is None:
        return
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(flow_run.id).tags
        client.update_flow_run(flow_run.id, tags=[*current, *tags])


def publish_markdown(key: str, markdown: str, description: str) -> None:
    """A markdown artifact in the Prefect UI (keys: lowercase letters, digits and dashes), its
    links made ones the UI can follow (`for_prefect_ui`)."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown=for_prefect_ui(markdown), key=key, description=description)


def publish_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    """A table artifact in the Prefect UI, its floats at 3 significant digits (never 3.855e-16 or
    0.0000: `tasks.core.numbers.significant`)."""
    from prefect.artifacts import create_table_artifact

    shown = [{column: significant(value) if isinstance(value, float) else value for column, value in row.items()}
             for row in rows]
    create_table_artifact(table=shown, key=key, description=description)


LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)\)")
FILE_URI = re.compile(r"file://[^\s`)>\]]+")


def for_prefect_ui(markdown: str) -> str:
    """Markdown as the Prefect UI can show it: it follows only http(s) links and shows images
    only from http(s) URLs, so any other link (a relative file name, `file:///...`) becomes the
    plain path it names, and a `file://` URI in the text becomes its path."""

    def plain(match: re.Match[str]) -> str:
        text, target = match.groups()
        if target.startswith(("http://", "https://")):
            return match.group(0)
        path = local_path(target)
        return f"`{path}`" if text in ("", target, path) else f"{text} (`{path}`)"

    return FILE_URI.sub(lambda match: local_path(match.group(0)), LINK.sub(plain, markdown))


def local_path(uri: str) -> str:
    """A `file://` URI as the path it names; anything else unchanged."""
    return unquote(urlparse(uri).path) if uri.startswith("file:") else uri


def figure_markdown(tracking: TrackingRef, artifact_path: str, caption: str) -> str:
    """A figure logged to the run (`artifact_path`, e.g. plots/learning_curves.png) as the
    Prefect UI can show it: the image itself, served by the MLflow tracking server's
    `get-artifact` route, when the store is a server; otherwise where the file lies, as a path."""
    store = tracking.store
    if store.startswith(("http://", "https://")):
        url = f"{store.rstrip('/')}/get-artifact?path={quote(artifact_path)}&run_uuid={tracking.run_id}"
        return f"![{caption}]({url})"
    artifact_uri = tracking.client.get_run(tracking.run_id).info.artifact_uri
    return f"{caption}: `{local_path(artifact_uri.rstrip('/'))}/{artifact_path}`"
