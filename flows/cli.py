"""The `transferflow` command. Heavy libraries are imported inside commands, so `--help` and
`schema` answer at once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from flows.local_server import server_for_dask_workers
from flows.preflight import check_servers
from flows.runtime import (
    apply_defaults,
    create_prefect_home,
    hide_user_error_tracebacks,
    import_flow_libraries,
    reexec_with_tuned_allocator,
    start_local_engine_early,
)
from flows.serve import DEFAULT_CRON, DEFAULT_DRIFT_EVERY
from tasks.core.errors import TransferflowError

if TYPE_CHECKING:
    from flows.transfer_learning import RunSummary
    from tasks.config.spec import Spec
    from tasks.labeling.queues import QueueName
    from tasks.steps.refs import Prepared

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Declarative transfer learning: one YAML config, one metric, a gated Prefect flow.")
console = Console()
errors = Console(stderr=True)

DataOption = typer.Option(None, "--data", help="Override data.path (resolved against the current folder).")
TaskRunnerOption = typer.Option(None, "--task-runner", help="local or dask: where the embedding shards run "
                                                            "(overrides runtime.task_runner)")


@app.command()
def init(data: Path = typer.Argument(..., help="Your labeled data: a folder of class folders, or a CSV file"),
         task: str = typer.Option(..., "--task", help="The task in one sentence"),
         metric: str = typer.Option(..., "--metric", help='The one success metric and its target, e.g. '
                                                          '"macro_f1>=0.85" or "recall:damaged>=0.9"'),
         out: Path = typer.Option(Path("transferflow.yaml"), "--out", help="Where to write the config"),
         name: str | None = typer.Option(None, "--name", help="registry.model_name (default: the data's name)"),
         text_column: str | None = typer.Option(None, help="A CSV's text column (default: text)"),
         label_column: str | None = typer.Option(None, help="A CSV's label column (default: label)"),
         force: bool = typer.Option(False, "--force", help="Replace --out, and labeling.md beside it, if they "
                                                           "exist")) -> None:
    """Write a first config from your data: its kind, classes and a base model whose weights are on
    this machine, with your task and metric, and a starter labelling guideline (labeling.md) beside
    it. Then `validate` it, then `run` it."""
    with _user_errors():
        from tasks.data.starter_config import write_starter_config

        written = write_starter_config(out, data, task, metric, name, text_column, label_column, force)
    counts = written.survey.counts
    console.print(f"[green]Wrote {written.path}[/green]: {written.survey.kind}, {len(counts)} classes, "
                  f"{sum(counts.values())} examples", highlight=False, soft_wrap=True)
    guideline = (f"Wrote {written.guideline}: a starter labelling guideline, one section per class; replace its "
                 "TODOs before labelling more" if written.guideline_written else
                 f"Kept the existing {written.guideline} as the labelling guideline (--force replaces it)")
    console.print(guideline, highlight=False, soft_wrap=True)
    for warning in written.warnings:
        console.print(f"[yellow]warning[/yellow] {warning}", highlight=False, soft_wrap=True)
    console.print(f"Next: transferflow validate {written.path}", highlight=False, soft_wrap=True)


@app.command()
def run(config: Path = typer.Argument(..., help="YAML config"), data: Path | None = DataOption,
        task_runner: str | None = TaskRunnerOption,
        resume: bool = typer.Option(False, "--resume", help="Continue this model's last killed (or failed) run: "
                                    "finished steps come from its persisted results, a stage from its last epoch")
        ) -> None:
    """Run the whole recipe: checks, split, baseline, fine-tuning, one test evaluation, gate."""
    with _user_errors():
        spec = _check_config(config, data, task_runner)
        on_dask = _on_dask(spec)
        check_servers(prefect=True, mlflow=True, dask=spec.runtime.dask.address if on_dask else None)
        create_prefect_home()
        with server_for_dask_workers(on_dask):
            wait_for_engine = start_local_engine_early()
            from flows.transfer_learning import transfer_learning
            from tasks.steps.refs import UnchangedData

            import_flow_libraries()
            wait_for_engine()
            summary = transfer_learning(str(config), str(data) if data else None, resume=resume)
    if isinstance(summary, UnchangedData):  # only a scheduled, drift- or labels-triggered run stops here
        console.print(summary.reason, highlight=False, soft_wrap=True)
        return
    _print_summary(summary)


@app.command()
def validate(config: Path = typer.Argument(..., help="YAML config"), data: Path | None = DataOption,
             task_runner: str | None = TaskRunnerOption) -> None:
    """Steps 1-4 only: config, data checks, split, label audit, leakage check, base model; writes the
    data report under <workdir>/reports/<model>/<data fingerprint>/. No training, no MLflow store. Exits 2
    when a check or data policy stops the run (the report says why)."""
    with _user_errors():
        spec = _check_config(config, data, task_runner)
        on_dask = _on_dask(spec)
        check_servers(prefect=True, dask=spec.runtime.dask.address if on_dask else None)
        create_prefect_home()
        with server_for_dask_workers(on_dask):
            from flows.transfer_learning import validate_only

            spec, prepared = validate_only(str(config), str(data) if data else None)
    console.print(f"[green]Ready to run.[/green] {spec.task}  |  contract: {spec.metric.describe()}")
    console.print("Split: " + ", ".join(f"{k} {v}" for k, v in prepared.split.sizes.items()))
    if prepared.report is not None:
        console.print(f"Data report: {prepared.report.verdict}\n  {prepared.report.path}", highlight=False,
                      soft_wrap=True)
    _print_notes(prepared)


@app.command()
def drift(config: Path = typer.Argument(..., help="YAML config"),
          incoming: Path = typer.Option(..., "--incoming", help="New unlabeled inputs: a folder of images (searched "
                                                                "recursively) or a CSV file of texts"),
          column: str | None = typer.Option(None, "--column", help="Text column of a CSV batch (default: the "
                                                                   "config's data.text_column)"),
          as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout (drift, p_value, "
                                                             "score, n, ...); logs go to stderr")) -> None:
    """Test new inputs against the champion's reference, examples it never trained on (MMD permutation
    test on its own embeddings). Exits 0 with or without drift: the decision is in the output."""
    with _user_errors():
        from tasks.config.loading import load_spec
        from tasks.monitoring.drift import locate_champion, read_incoming

        spec = load_spec(config)  # config, batch and champion are checked before the flow starts
        read_incoming(incoming, spec.modality, column or spec.data.csv_columns.text)
        check_servers(prefect=True, mlflow=True)
        locate_champion(spec.workdir, spec.registry.model_name, spec.registry.alias)
        create_prefect_home()
        wait_for_engine = start_local_engine_early()
        from flows.drift import drift_check

        wait_for_engine()
        report = drift_check(str(config), str(incoming), text_column=column)
    if as_json:
        typer.echo(json.dumps(report.as_json()))
        return
    table = Table(title=f"drift check: {report.model_name} version {report.champion_version}", show_header=False)
    table.add_row("decision", f"[{'red' if report.drift else 'green'}]{report.verdict}[/]")
    if report.already_checked:
        table.add_row("already checked", f"the first verdict on this batch (MLflow run {report.already_checked}): "
                                         "not tested, copied or evented again")
    table.add_row("p-value", f"{report.p_value:.4f} (alpha {report.alpha:g}, {report.permutations} permutations)")
    table.add_row("MMD^2", f"{report.score:.4g}")
    table.add_row("inputs", f"{report.n} incoming vs {report.reference_n} reference")
    table.add_row("class mix moved", f"{report.class_mix_shift:.1%}")
    if report.stored_batch:
        table.add_row("stored for labeling", report.stored_batch)
    table.add_row("mlflow run", str(report.mlflow_run_id))
    console.print(table)


@app.command()
def predict(model_uri: str = typer.Argument(..., help="e.g. models:/digits@champion"),
            inputs: list[Path] | None = typer.Argument(None, help="Image or sound files, folders of them, or CSV "
                                                                  "files of texts or of sound-file paths"),
            column: str = typer.Option("text", help="The column of texts (or of sound-file paths, relative to the "
                                                    "CSV's folder) when an input is a CSV"),
            out: Path | None = typer.Option(None, "--out", help="Write all predictions to this CSV file "
                                                                "(label, probability and p_<class> per input)"),
            force: bool = typer.Option(False, "--force", help="Replace the --out file if it exists"),
            workdir: Path = typer.Option(Path(".transferflow"), help="Where the default MLflow store is")) -> None:
    """Predict with a registered model: label and probability per input. Files are read here and
    sent as a served model gets them (image or sound bytes, texts), never as paths; a CSV is read
    as the model reads it (texts, or a list of sound files for an audio model)."""
    with _user_errors():
        from tasks.registry.predict import (
            check_can_write,
            check_given,
            check_modality,
            predict_in_batches,
            read_inputs,
            registered_modality,
            registered_model,
            write_predictions,
        )

        check_given(inputs or [])
        if out is not None:
            check_can_write(out.expanduser(), force)  # before any work: an existing file is never lost
        check_servers(mlflow=True)
        # The model's modality from its metadata (no weights load), so the inputs are read, and a bad
        # one named, before the model loads.
        model_inputs = read_inputs(inputs or [], column, registered_modality(model_uri, workdir.expanduser()))
        with registered_model(model_uri, workdir.expanduser()) as model:
            check_modality(model_inputs, model, model_uri)
            answers = predict_in_batches(model, model_inputs)
        if out is not None:
            written = write_predictions(answers, out.expanduser())
            console.print(f"Wrote {len(answers)} prediction(s) to {written}", soft_wrap=True, highlight=False)
            return
    table = Table("input", "label", "probability")
    for item, label, probability in zip(model_inputs, answers["label"], answers["probability"], strict=True):
        table.add_row(item.shown, str(label), f"{probability:.3f}")
    console.print(table)


@app.command()
def serve(config: Path = typer.Argument(..., help="YAML config"),
          incoming: Path = typer.Option(..., "--incoming", help="Where new unlabeled batches arrive: the drift "
                                                                "check reads it"),
          cron: str = typer.Option(DEFAULT_CRON, help="When `retrain` runs (cron: minute hour day month weekday)"),
          drift_every: str = typer.Option(DEFAULT_DRIFT_EVERY, "--drift-every", help="How often `drift-check` "
                                                                                     "runs: 90s, 30m, 6h, 1d")) -> None:
    """Serve `retrain` (cron, and on a drift event for this model) and `drift-check` (interval) from
    this process until Ctrl-C; starts a local Prefect server when PREFECT_API_URL is unset."""
    with _user_errors():
        from flows.serve import plan, serve_plan_deployments

        serve_plan = plan(config, incoming, cron, drift_every)
        check_servers(prefect=True, mlflow=True)
        create_prefect_home()
        serve_plan_deployments(serve_plan)


split_app = typer.Typer(no_args_is_help=True, help="The split history that keeps each example in one split.")
app.add_typer(split_app, name="split")


@split_app.command("reset")
def split_reset(model: str = typer.Argument(..., help="Registry model name (registry.model_name)"),
                workdir: Path = typer.Option(Path(".transferflow"), help="The work directory of its runs"),
                alias: str = typer.Option("champion", help="The model's registry.alias"),
                yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation")) -> None:
    """Start a new split history for MODEL: the next run assigns every example afresh."""
    with _user_errors():
        from tasks.registry.split_history_store import history_store, reset_consequences

        workdir = workdir.expanduser().resolve()
        store = history_store(workdir, model)
        if store.read().generation == 0:
            raise TransferflowError(f"{store.describe()}: no split history for model '{model}'. Fix: pass the "
                                    "model's registry.model_name and the --workdir (and MLFLOW_TRACKING_URI) its "
                                    "runs use.")
        console.print(reset_consequences(workdir, model, alias), highlight=False, soft_wrap=True)
        if not yes:
            typer.confirm(f"Start a new split history for '{model}'? Examples may move between train, "
                          "validation and test, and the test ledger's exposure counts start again", abort=True)
        retired = store.retire()
    console.print(f"New split history for '{model}': the next run assigns every example afresh; the test "
                  f"ledger's exposure counts start again. The old assignments are kept in {retired}.")


label_app = typer.Typer(no_args_is_help=True, help="The review loop: send a queue to Label Studio (push) or a CSV "
                                                    "(export), bring the answers back (pull), see progress (status), "
                                                    "undo a pull (revert).")
app.add_typer(label_app, name="label")
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
    with _user_errors():
        spec = _check_config(config, data)
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
    with _user_errors():
        spec = _check_config(config, data)
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
    with _user_errors():
        spec = _check_config(config, data)
        from tasks.labeling.loop import build_queue
        from tasks.labeling.queues import write_queue

        queue = build_queue(spec, _queue_name(what), batch, limit=limit)
        written = write_queue(queue, out)
    console.print(f"Wrote {len(queue.items)} {what} item(s) to {written}: fill in the `label` column, then "
                  f"transferflow label pull {config} --from {written}", highlight=False, soft_wrap=True)


@label_app.command("status")
def label_status(config: Path = typer.Argument(..., help="YAML config"), data: Path | None = DataOption) -> None:
    """Each queue's progress on the Label Studio server, and what the labels store holds."""
    with _user_errors():
        spec = _check_config(config, data)
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
    with _user_errors():
        spec = _check_config(config, data)
        from tasks.data.labels_store import revert_pull

        undone = revert_pull(spec.data, pull)
    console.print(f"Reverted {pull}: {undone} record(s) undone in {spec.data.labels_folder}", highlight=False,
                  soft_wrap=True)


@app.command()
def schema() -> None:
    """Print the config's JSON schema (fields, defaults, allowed values)."""
    from tasks.config.spec import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


def _check_config(config: Path, data: Path | None, task_runner: str | None = None) -> Spec:
    """Fail in a second on a config error, before the heavy imports and the Prefect engine start;
    the flow validates again as its first task (deployments run it without this command).
    `--task-runner` travels to the flow as TRANSFERFLOW_TASK_RUNNER, which beats the config."""
    import os

    from tasks.config.loading import TASK_RUNNER_VARIABLE, load_spec

    if task_runner:
        os.environ[TASK_RUNNER_VARIABLE] = task_runner
    return load_spec(config, data)


def _on_dask(spec: Spec) -> bool:
    """Whether the run uses Dask; checks first that prefect-dask is installed (an optional extra)."""
    if spec.runtime.task_runner != "dask":
        return False
    from tasks.steps.runners import require_prefect_dask

    require_prefect_dask()
    return True


@contextmanager
def _user_errors() -> Iterator[None]:
    """Print a TransferflowError as its message and exit 2; other errors keep their traceback."""
    apply_defaults()
    hide_user_error_tracebacks()
    try:
        yield
    except TransferflowError as error:
        errors.print(f"[bold red]error:[/bold red] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None


def _print_summary(summary: RunSummary) -> None:
    spec, outcome = summary.spec, summary.outcome
    table = Table(title=spec.task, show_header=False)
    table.add_row("data checks", "passed" + (f" ({len(summary.quality.warnings)} warning(s))"
                                             if summary.quality.warnings else ""))
    table.add_row("split", ", ".join(f"{k} {v}" for k, v in summary.split.sizes.items()))
    decided = {entry["stage"]: entry["action"] for entry in summary.decisions}
    for stage in summary.stages:
        action = f"  -> {decided[stage.name]}" if stage.name in decided else ""
        table.add_row(f"{stage.name} (validation)", f"{spec.metric.key} {stage.val_value:.4f}{action}")
    table.add_row("selected", summary.selected.name)
    table.add_row("test", f"{spec.metric.key} {summary.test.value:.4f} vs target {spec.metric.target:g} "
                          f"({summary.test.n_examples} examples)")
    colour = "green" if outcome.decision.passed else "red"
    promoted = (f"promoted: {spec.registry.model_name}@{spec.registry.alias} -> version "
                f"{outcome.registration.version}" if outcome.decision.passed
                else f"not promoted (version {outcome.registration.version} registered, alias unchanged)")
    table.add_row("decision", f"[{colour}]{promoted}[/{colour}]")
    table.add_row("why", outcome.decision.reason)
    table.add_row("mlflow run", summary.run_id)
    console.print(table)
    _print_notes(summary.prepared)


def _print_notes(prepared: Prepared) -> None:
    """What a person should not miss: files the loader left out, audit and split warnings."""
    from tasks.data.table import skipped_summary

    skipped = skipped_summary(prepared.dataset.skipped_files)
    for warning in ([skipped] if skipped else []) + [*prepared.quality.warnings, *prepared.split.warnings]:
        console.print(f"[yellow]warning[/yellow] {warning}", highlight=False, soft_wrap=True)


def main() -> None:
    reexec_with_tuned_allocator()
    app(prog_name="transferflow")  # the restarted process would call itself `python -m flows.cli`


if __name__ == "__main__":
    main()
