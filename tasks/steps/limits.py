"""Per-model Prefect global concurrency limits, held across every process that talks to one
Prefect server: one retrain per model at a time (`transferflow-retrain-<model>`) and one
promotion, recipe step 7, per model at a time (`transferflow-promote-<model>`). The names differ,
so a retrain holding its own limit never waits on itself when it reaches step 7.

Only with a real server (PREFECT_API_URL set): the local ephemeral engine lives and dies with one
process, so a limit there guards nothing; the file lock beside the store covers that case.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress

from tasks.steps.step import model_slug

# Renewed in the background while held; a crashed holder's slot frees within this many seconds.
LEASE_SECONDS = 60.0


def limit_name(kind: str, model_name: str) -> str:
    """`transferflow-<kind>-<model>`, the model slugged one-to-one as in artifact keys."""
    return f"transferflow-{kind}-{model_slug(model_name)}"


def server_configured() -> bool:
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def ensure_limit(name: str) -> None:
    """Create the limit (1 slot) if absent: acquiring with `strict=True` then fails loudly if it
    is deleted, instead of silently running unguarded. An existing limit is left as its owner set it."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        with suppress(ObjectAlreadyExists):  # another process created it first
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


@contextmanager
def model_limit(kind: str, model_name: str) -> Iterator[None]:
    """Hold one slot of `transferflow-<kind>-<model>` for the block (no-op without a server)."""
    if not server_configured():
        yield
        return
    from prefect.concurrency.sync import concurrency

    name = limit_name(kind, model_name)
    ensure_limit(name)
    with concurrency(name, occupy=1, strict=True, lease_duration=LEASE_SECONDS):
        yield


def retrain_limit(model_name: str) -> AbstractContextManager[None]:
    """Around a whole training flow run: queued retrains of one model run one after another."""
    return model_limit("retrain", model_name)


def promotion_limit(model_name: str) -> AbstractContextManager[None]:
    """Around step 7: read the champion, test once, gate, move the alias."""
    return model_limit("promote", model_name)
