"""What the `transferflow` commands share: the consoles, the --data option, the quick config check
and the way a user error is printed (its message, exit 2, no traceback)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from flows.runtime import apply_defaults, hide_user_error_tracebacks
from tasks.core.errors import TransferflowError

if TYPE_CHECKING:
    from tasks.config.spec import Spec

console = Console()
errors = Console(stderr=True)

DataOption = typer.Option(None, "--data", help="Override data.path (resolved against the current folder).")


def check_config(config: Path, data: Path | None, task_runner: str | None = None) -> Spec:
    """Fail in a second on a config error, before the heavy imports and the Prefect engine start;
    the flow validates again as its first task (deployments run it without this command).
    `--task-runner` travels to the flow as TRANSFERFLOW_TASK_RUNNER, which beats the config."""
    import os

    from tasks.config.loading import TASK_RUNNER_VARIABLE, load_spec

    if task_runner:
        os.environ[TASK_RUNNER_VARIABLE] = task_runner
    return load_spec(config, data)


def on_dask(spec: Spec) -> bool:
    """Whether the run uses Dask; checks first that prefect-dask is installed (an optional extra)."""
    if spec.runtime.task_runner != "dask":
        return False
    from tasks.steps.runners import require_prefect_dask

    require_prefect_dask()
    return True


@contextmanager
def user_errors() -> Iterator[None]:
    """Print a TransferflowError as its message and exit 2; other errors keep their traceback."""
    apply_defaults()
    hide_user_error_tracebacks()
    try:
        yield
    except TransferflowError as error:
        errors.print(f"[bold red]error:[/bold red] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
