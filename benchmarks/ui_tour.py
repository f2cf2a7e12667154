"""Look at a demo run the way a new user does: in a real Prefect UI and a real MLflow UI, in a browser.

Starts `prefect server` and `mlflow server` on 127.0.0.1 (free ports, a throwaway home), runs the
embedded demo (`transferflow run configs/digits-demo.yaml`, its own workdir) against both, then:
- checks what the two servers serve, through their HTTP APIs: one run name in both UIs and the
  links between them, Prefect's log naming no other run, task runs named per stage, artifacts with
  no `file://` text and no hashes, the descriptions (experiment, parent run, registered model, the
  internal ledger experiment), stage runs that last as long as their stage, one selected stage, the
  logged model behind the version, a handful of version tags, `model.weights` and
  `previous_champion`;
- takes headless-Chromium screenshots of Prefect's run list, the flow run, its artifacts and the
  decisions artifact, and MLflow's experiment (model-training view), parent run and version page.

Prints one line per check and exits 1 if any failed. Needs Chromium (`apt-get install chromium`)
and ~5 minutes on 2 cores (the demo's run is most of it). Run by hand (benchmarks/README.md):
    .venv/bin/python benchmarks/ui_tour.py OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from offline import offline_preamble

REPO = offline_preamble()

from flows.local_server import local_prefect_server  # noqa: E402
from flows.runtime import ALLOCATOR_SETTINGS  # noqa: E402
from tests.browser import Browser  # noqa: E402
from tests.mlflow_server import mlflow_server  # noqa: E402

HEX_ID = re.compile(r"\b[0-9a-f]{64}\b")


class Checks:
    """Named checks, printed as they run; `failed` counts the ones that did not hold."""

    def __init__(self) -> None:
        self.failed = 0

    def __call__(self, name: str, holds: bool, detail: object = "") -> None:
        self.failed += not holds
        print(f"{'ok  ' if holds else 'FAIL'} {name}" + (f"  [{detail}]" if detail != "" and not holds else ""),
              flush=True)


def demo_config(folder: Path) -> Path:
    """The shipped demo config with its own workdir; the digits stay where the demo writes them."""
    config = yaml.safe_load((REPO / "configs" / "digits-demo.yaml").read_text())
    config["data"]["path"] = str((REPO / "configs" / config["data"]["path"]).resolve())
    config["workdir"] = str(folder / "work")
    path = folder / "digits-demo.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_demo(config: Path, prefect_api: str, tracking: str, prefect_home: Path) -> None:
    env = {**os.environ, **ALLOCATOR_SETTINGS, "PREFECT_API_URL": prefect_api, "MLFLOW_TRACKING_URI": tracking,
           "PREFECT_HOME": str(prefect_home)}
    done = subprocess.run([sys.executable, "-P", "-m", "flows.cli", "run", str(config)], env=env, cwd=REPO,
                          capture_output=True, text=True)
    print(done.stdout[-2500:])
    if done.returncode != 0:
        sys.exit(f"the demo run failed:\n{done.stderr[-4000:]}")


def prefect(api: str, path: str, body: dict[str, Any]) -> Any:
    answer = httpx.post(f"{api}{path}", json=body, timeout=60)
    answer.raise_for_status()
    return answer.json()


def check_prefect(check: Checks, api: str, ui: str, flow_run: dict[str, Any], mlflow_run_url: str) -> list[dict]:
    """The flow run's logs, task runs and artifacts as the Prefect UI shows them. Returns the artifacts."""
    name, run_id = flow_run["name"], flow_run["id"]
    logs = prefect(api, "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200,
                                          "sort": "TIMESTAMP_ASC"})
    named = {m for log in logs for m in re.findall(r"[Ff]low run '([^']+)'", log["message"])}
    check("the flow run's log names no other run", named == {name}, named)
    check("the first log line names the run", name in logs[0]["message"], logs[0]["message"][:200])
    tasks = prefect(api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
    stages = sorted(t["name"] for t in tasks if t["name"].startswith("6 fine-tuning"))
    check("each fine-tuning task run is named by its stage", bool(stages) and stages == sorted(set(stages)) and all(
        re.fullmatch(r"6 fine-tuning finetune-\d+", s) for s in stages), stages)
    artifacts = prefect(api, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    texts = {a["key"]: json.dumps(a["data"]) + (a["description"] or "") for a in artifacts}
    check("no artifact shows file:// text", not [k for k, t in texts.items() if "file://" in t],
          [k for k, t in texts.items() if "file://" in t])
    check("no artifact shows a 64-character hash", not [k for k, t in texts.items() if HEX_ID.search(t)],
          [k for k, t in texts.items() if HEX_ID.search(t)])
    check("an artifact links to the MLflow run page", any(mlflow_run_url in t for t in texts.values()), mlflow_run_url)
    return list(artifacts)


def check_mlflow(check: Checks, client: Any, parent: Any, flow_run: dict[str, Any], ui: str, model: str) -> None:
    from tasks.registry.evidence import EVIDENCE_ARTIFACT
    from tasks.registry.ledger import LEDGER_EXPERIMENT
    from tasks.registry.tracking import NOTE_TAG, PREFECT_URL_TAG
    from tasks.steps.select import SELECTED_TAG

    tags = parent.data.tags
    check("the MLflow parent run has the flow run's name", parent.info.run_name == flow_run["name"],
          (parent.info.run_name, flow_run["name"]))
    check("the parent run links to the flow run", tags.get(PREFECT_URL_TAG) == f"{ui}/runs/flow-run/{flow_run['id']}",
          tags.get(PREFECT_URL_TAG))
    experiment = client.get_experiment(parent.info.experiment_id)
    check("the experiment says what the model is for and its contract",
          "macro_f1" in experiment.tags.get(NOTE_TAG, "") and "0.95" in experiment.tags.get(NOTE_TAG, ""),
          experiment.tags.get(NOTE_TAG))
    check("the experiment opens in the model-training view",
          experiment.tags.get("mlflow.experimentKind") == "custom_model_development")
    note = tags.get(NOTE_TAG, "")
    check("the parent run's description gives decision, test metric and selected stage",
          all(word in note.lower() for word in (tags.get("decision", "?"), "test", "selected stage")), note)
    ledger = client.get_experiment_by_name(LEDGER_EXPERIMENT)
    check("the ledger experiment says it is internal",
          ledger is not None and "internal" in ledger.tags.get(NOTE_TAG, "").lower())
    registered = client.get_registered_model(model)
    check("the registered model has the task sentence", "handwritten digit" in (registered.description or ""))
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    stages = [r for r in children if r.info.run_name.startswith("finetune")]
    seconds = {r.info.run_name: (r.info.end_time - r.info.start_time) / 1000 for r in stages}
    check("each stage run lasts as long as its stage (over 5 s)", bool(seconds) and min(seconds.values()) > 5, seconds)
    selected = [r.info.run_name for r in children if r.data.tags.get(SELECTED_TAG) == "true"]
    check("exactly one stage run is tagged selected", len(selected) == 1, selected)
    [version] = client.search_model_versions(f"name = '{model}'")
    logged = client.search_logged_models([parent.info.experiment_id])
    check("the version comes from a logged model of the run",
          any(m.artifact_location == version.source and m.source_run_id == parent.info.run_id for m in logged),
          [(m.name, m.source_run_id) for m in logged])
    check("the version row shows at most 5 tags", len(version.tags) <= 5, sorted(version.tags))
    check("the rest of the evidence is evidence.json",
          EVIDENCE_ARTIFACT in {f.path for f in client.list_artifacts(parent.info.run_id)})
    weights = parent.data.params.get("model.weights")
    check("model.weights names the weights used", bool(weights) and weights != "None", weights)
    check("previous_champion replaces champion_version",
          "previous_champion" in tags and "champion_version" not in tags, sorted(tags))


def screenshots(check: Checks, out: Path, prefect_ui: str, mlflow_ui: str, flow_run: dict[str, Any],
                artifacts: list[dict], parent: Any, model: str, profile: Path) -> None:
    """Each page once its app has rendered the text that shows it is the right page (a page that never
    does is a failed check, and still photographed: the picture shows what is wrong)."""
    name, run_id = flow_run["name"], flow_run["id"]
    decisions = next((a for a in artifacts if (a["key"] or "").endswith("-decisions")), None)
    experiment, view = parent.info.experiment_id, "?workflowType=machine_learning"
    artifacts_tab = ("[...document.querySelectorAll('*')].filter(e => !e.children.length && "
                     "e.textContent.trim() === 'Artifacts').map(e => (e.closest('[role=tab], button, a, li') || e)"
                     ".click()).length")
    # (file, URL, text that shows the page has rendered, JavaScript to run first or "")
    pages: list[tuple[str, str, str, str]] = [
        ("prefect-runs.png", f"{prefect_ui}/runs", name, ""),
        ("prefect-flow-run.png", f"{prefect_ui}/runs/flow-run/{run_id}", "6 fine-tuning", ""),
        ("prefect-artifacts.png", f"{prefect_ui}/runs/flow-run/{run_id}", f"{model}-data-report", artifacts_tab),
        ("mlflow-experiment.png", f"{mlflow_ui}/#/experiments/{experiment}{view}", name, ""),
        ("mlflow-parent-run.png", f"{mlflow_ui}/#/experiments/{experiment}/runs/{parent.info.run_id}{view}",
         "Selected stage", ""),
        ("mlflow-version.png", f"{mlflow_ui}/#/models/{model}/versions/1{view}", "champion", ""),
    ]
    if decisions is not None:
        pages.insert(3, ("prefect-decisions.png", f"{prefect_ui}/artifacts/artifact/{decisions['id']}", "finetune-1",
                         ""))
    close_assistant = ("[...document.querySelectorAll('button[aria-label]')]"
                       ".find(b => /close/i.test(b.getAttribute('aria-label')))?.click()")
    browser = Browser(profile)
    try:
        for file, url, text, first in pages:
            shown = f"document.body.innerText.includes({json.dumps(text)})"
            try:
                if first:
                    browser.open(url, "document.body.innerText.length > 200")
                    browser.evaluate(first)
                    browser.wait(shown, settle_s=2.0, timeout_s=90)
                else:
                    browser.open(url, shown, timeout_s=90)
                if url.startswith(mlflow_ui):
                    browser.evaluate(close_assistant)  # MLflow 3.17's assistant panel covers a third of the page
                    time.sleep(1)
                check(f"{file}: the page shows {text!r}", True)
            except RuntimeError as error:
                check(f"{file}: the page shows {text!r}", False, error)
            browser.screenshot(out / file)
    finally:
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where the screenshots go")
    args = parser.parse_args()
    from mlflow import MlflowClient

    args.out.mkdir(parents=True, exist_ok=True)
    check = Checks()
    started = datetime.now()
    with tempfile.TemporaryDirectory(prefix="transferflow-ui-tour-") as temp, \
            local_prefect_server(Path(temp) / "prefect-server") as server, \
            mlflow_server(Path(temp) / "mlflow") as tracking:
        config = demo_config(Path(temp))
        model = yaml.safe_load(config.read_text())["registry"]["model_name"]
        run_demo(config, server.api_url, tracking.url, Path(temp) / "prefect-client")
        client = MlflowClient(tracking.url)
        [flow_run] = prefect(server.api_url, "/flow_runs/filter", {"limit": 5})  # the demo's, the only one
        [parent] = [r for r in client.search_runs([e.experiment_id for e in client.search_experiments()],
                                                  f"tags.prefect_flow_run_id = '{flow_run['id']}'")
                    if "mlflow.parentRunId" not in r.data.tags]
        from tasks.registry.tracking import run_page_url

        artifacts = check_prefect(check, server.api_url, server.ui_url, flow_run,
                                  str(run_page_url(tracking.url, parent.info.experiment_id, parent.info.run_id)))
        check_mlflow(check, client, parent, flow_run, server.ui_url, model)
        screenshots(check, args.out, server.ui_url, tracking.url, flow_run, artifacts, parent, model,
                    Path(temp) / "chromium")
    print(f"{check.failed} check(s) failed; screenshots in {args.out}; {(datetime.now() - started).seconds} s")
    sys.exit(1 if check.failed else 0)


if __name__ == "__main__":
    main()

