"""`transferflow label`: the review loop's commands. Send a queue to Label Studio (push) or a CSV
(export), bring the answers back (pull), see progress (status), undo a pull (revert)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from flows.cli_support import DataOption, check_config, console, user_errors
from tasks.core.errors import TransferflowError

if TYPE_CHECKING:
    from tasks.labeling.queues import QueueName

label_app = typer.Typer(no_args_is_help=True, help="The review loop: send a queue to Label Studio (push) or a CSV "
                                                    "(export), bring the answers back (pull), see progress (status), "
                                                    "undo a pull (revert).")
WhatOption = typer.Option("suspects", "--what", help="suspects: the last data report's disputed labels; incoming: "
                                                     "a batch `transferflow drift` kept; cross-check: a sample for a "
                                                     "second labeller, shown no label")
BatchOption = typer.Option(None, "--batch", help="The kept batch (--what incoming; default: the newest one)")
LimitOption = typer.Option(None, "--limit", min=1, help="Only the first N items (suspects: the most suspect first; "
                                                         "cross-check: the sample's size, 100 by default)")


@label_app.command("push")
def label_push(config: Path = typer.Argument(..., help="YAML config"), what: str = WhatOption,
               batch: Path | None = BatchOption, limit: int | None = LimitOption,
               data: Path | None = DataOption) -> None:
    """Send a queue to the Label Studio at LABEL_STUDIO_URL (key: LABEL_STUDIO_API_KEY), one project per
    model and queue: the guideline as its instructions, files uploaded, the champion's prediction as a
    pre-annotation except on test and not-yet-split examples (labelled blind). A second push adds only
    what the project lacks."""
    with user_errors():
        spec = check_config(config, data)
        from tasks.labeling.loop import push

        result = push(spec, _queue_name(what), batch, limit)
    console.print(f"{result.added} task(s) added ({result.pre_annotated} with the champion's pre-annotation, "
                  f"{result.blind} blind), {result.already} already there: {result.url}", highlight=False,
                  soft_wrap=True)


@label_app.command("pull")
def label_pull(config: Path = typer.Argument(..., help="YAML config"),
               answers: Path | None = typer.Option(None, "--from", help="A filled-in CSV (id, label, and input or "
                                                                       "path for new examples); without it, the "
                                                                       "answers on the Label Studio server"),
               data: Path | None = DataOption) -> None:
    """Bring reviewed labels into the labels store (data.labels_store): every answer is checked first, and
    one bad answer applies nothing. A pull that changed anything emits transferflow.labels.added, which
    the retrain deployments listen for."""
    with user_errors():
        spec = check_config(config, data)
        from tasks.labeling.loop import pull

        summary = pull(spec, config, answers.expanduser().resolve() if answers else None)
    result = summary.result
    where = f"pull {result.pull} in {spec.data.labels_folder}" if result.pull else "nothing to record"
    in_test = f" ({summary.test_corrections} in test: they stay in test)" if summary.test_corrections else ""
    second = f", {result.second} second opinion(s) for the cross-check" if result.second else ""
    console.print(f"{result.corrected} corrected{in_test}, {result.confirmed} confirmed unchanged, {result.new} new"
                  f"{second}, {result.skipped} skipped (no label yet): {where}", highlight=False, soft_wrap=True)
    if summary.event_sent:
        console.print(f"Emitted transferflow.labels.added for '{spec.registry.model_name}': its retrain deployment "
                      "starts a gated retrain.", highlight=False, soft_wrap=True)


@label_app.command("export")
def label_export(config: Path = typer.Argument(..., help="YAML config"), what: str = WhatOption,
                 out: Path = typer.Option(..., "--out", help="The CSV to write; for images and sounds, a folder "
                                                             "(the files are copied into it beside queue.csv)"),
                 batch: Path | None = BatchOption, limit: int | None = LimitOption,
                 data: Path | None = DataOption) -> None:
    """Write a review queue as a CSV (id, input, current label, suggestion, score, the champion's
    prediction where it may be shown, an empty `label` column) that `label pull --from` reads back."""
    with user_errors():
        spec = check_config(config, data)
        from tasks.labeling.loop import build_queue
        from tasks.labeling.queues import write_queue

        queue = build_queue(spec, _queue_name(what), batch, limit=limit)
        written = write_queue(queue, out)
    console.print(f"Wrote {len(queue.items)} {what} item(s) to {written}: fill in the `label` column, then "
                  f"transferflow label pull {config} --from {written}", highlight=False, soft_wrap=True)


@label_app.command("status")
def label_status(config: Path = typer.Argument(..., help="YAML config"), data: Path | None = DataOption) -> None:
    """Each queue's progress on the Label Studio server, and what the labels store holds."""
    with user_errors():
        spec = check_config(config, data)
        from tasks.data.labels_store import applied_records, pull_ids
        from tasks.labeling.label_studio import Studio, server_errors, status

        studio = Studio()
        with server_errors(studio):
            rows = status(studio, spec.registry.model_name)
        folder = spec.data.labels_folder
        pulls, applied = pull_ids(folder), applied_records(folder)
    table = Table("queue", "tasks", "answered", "skipped", "left", "project")
    for row in rows:
        table.add_row(row.queue, str(row.tasks), str(row.answered), str(row.skipped),
                      str(max(row.tasks - row.answered, 0)), row.url)
    console.print(table if rows else f"No queue of '{spec.registry.model_name}' on the server yet: "
                  f"transferflow label push {config}")
    console.print(f"Labels store {folder}: {len(pulls)} pull file(s), {len(applied)} reviewed label(s) in force.",
                  highlight=False, soft_wrap=True)


def _queue_name(what: str) -> QueueName:
    queues: dict[str, QueueName] = {"suspects": "suspects", "incoming": "incoming", "cross-check": "cross-check"}
    if what not in queues:
        raise TransferflowError(f"--what {what}: not a queue. Fix: pass --what suspects, incoming or cross-check.")
    return queues[what]


@label_app.command("revert")
def label_revert(config: Path = typer.Argument(..., help="YAML config"),
                 pull: str = typer.Option(..., "--pull", help="The pull to undo (pull-..., as `label pull` named it)"),
                 data: Path | None = DataOption) -> None:
    """Undo a pull by a revert record (the store is never edited): the next run loads the labels it
    replaced."""
    with user_errors():
        spec = check_config(config, data)
        from tasks.data.labels_store import revert_pull

        undone = revert_pull(spec.data, pull)
    console.print(f"Reverted {pull}: {undone} record(s) undone in {spec.data.labels_folder}", highlight=False,
                  soft_wrap=True)
