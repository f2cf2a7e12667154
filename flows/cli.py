"""The `transferflow` command. Heavy libraries are imported inside commands, so `--help` and
`schema` answer at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from flows.cli_support import DataOption, check_config, console, on_dask, user_errors
from flows.label_cli import label_app
from flows.local_server import server_for_dask_workers
from flows.preflight import check_servers
from flows.runtime import (
    create_prefect_home,
    import_flow_libraries,
    reexec_with_tuned_allocator,
    start_local_engine_early,
)
from flows.serve import DEFAULT_CRON, DEFAULT_DRIFT_EVERY
from tasks.core.errors import TransferflowError

if TYPE_CHECKING:
    from flows.transfer_learning import RunSummary
    from tasks.steps.refs import Prepared

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Declarative transfer learning: one YAML config, one metric, a gated Prefect flow.")
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
    with user_errors():
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
    with user_errors():
        spec = check_config(config, data, task_runner)
        dask = on_dask(spec)
        check_servers(prefect=True, mlflow=True, dask=spec.runtime.dask.address if dask else None)
        create_prefect_home()
        with server_for_dask_workers(dask):
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
    with user_errors():
        spec = check_config(config, data, task_runner)
        dask = on_dask(spec)
        check_servers(prefect=True, dask=spec.runtime.dask.address if dask else None)
        create_prefect_home()
        with server_for_dask_workers(dask):
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
    with user_errors():
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
    with user_errors():
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
    with user_errors():
        from flows.serve import plan, serve_plan_deployments

        serve_plan = plan(config, incoming, cron, drift_every)
        check_servers(prefect=True, mlflow=True)
        create_prefect_home()
        serve_plan_deployments(serve_plan)


split_app = typer.Typer(no_args_is_help=True, help="The split history that keeps each example in one split.")
app.add_typer(split_app, name="split")
app.add_typer(label_app, name="label")


@split_app.command("reset")
def split_reset(model: str = typer.Argument(..., help="Registry model name (registry.model_name)"),
                workdir: Path = typer.Option(Path(".transferflow"), help="The work directory of its runs"),
                alias: str = typer.Option("champion", help="The model's registry.alias"),
                yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation")) -> None:
    """Start a new split history for MODEL: the next run assigns every example afresh."""
    with user_errors():
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


@app.command()
def schema() -> None:
    """Print the config's JSON schema (fields, defaults, allowed values)."""
    from tasks.config.spec import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


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
