"""How a recipe step becomes a Prefect task: named for the UI, never cached or persisted by
Prefect (our caches are content-addressed on disk), and its prints go to the run's logs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE


def step(name: str) -> Callable[[Callable[..., Any]], Any]:
    return task(name=name, cache_policy=NO_CACHE, persist_result=False, log_prints=True)


def publish_markdown(key: str, markdown: str, description: str) -> None:
    """A markdown artifact in the Prefect UI (keys: lowercase letters, digits and dashes)."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown=markdown, key=key, description=description)


def publish_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    from prefect.artifacts import create_table_artifact

    create_table_artifact(table=rows, key=key, description=description)
