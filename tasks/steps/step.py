"""How a recipe step becomes a Prefect task: named for the UI, not cached or persisted by Prefect
(our caches are content-addressed on disk; a training flow's resume chain turns caching on for the
steps it may reuse, `tasks.steps.resume.cached`), and its prints go to the run's logs."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

P = ParamSpec("P")
R = TypeVar("R")


def step(name: str) -> Callable[[Callable[P, R]], Task[P, R]]:
    """The Prefect task keeps the function's signature, so mypy checks every call a flow makes."""
    return task(name=name, cache_policy=NO_CACHE, persist_result=False, log_prints=True)


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


def label_flow_run(model_name: str, trigger: str) -> None:
    """Name the running flow after the model and what started it, and tag it, so the UI's run
    list reads as each model's history rather than random names."""
    from prefect import get_client
    from prefect.runtime import flow_run

    if flow_run.id is None:
        return
    stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H%M%S")
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, name=f"{model_name}-{trigger}-{stamp}",
                               tags=[*flow_run.tags, f"model:{model_name}", f"trigger:{trigger}"])


def tag_flow_run(tag: str) -> None:
    """Add a tag (e.g. the gate's decision) to the running flow."""
    from prefect import get_client
    from prefect.runtime import flow_run

    if flow_run.id is None:
        return
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(flow_run.id).tags
        client.update_flow_run(flow_run.id, tags=[*current, tag])


def publish_markdown(key: str, markdown: str, description: str) -> None:
    """A markdown artifact in the Prefect UI (keys: lowercase letters, digits and dashes)."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown=markdown, key=key, description=description)


def publish_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    from prefect.artifacts import create_table_artifact

    create_table_artifact(table=rows, key=key, description=description)
