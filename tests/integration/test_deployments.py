"""`transferflow serve` against the session's real Prefect server: both deployments registered
with their schedules, a `transferflow.drift.detected` event for the served model starts a
`retrain` run of that config, which completes under the per-model concurrency limits; then a
`transferflow.labels.added` event, sent by `emit_labels_added` as `label pull` sends it, starts
another (on unchanged data it trains nothing, so it costs seconds)."""

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import csv_slice, run_transferflow, sms_config

pytestmark = pytest.mark.integration

MODEL = "Spam_Filter.v1"  # a name that needs slugging in limit names
RUN_TIMEOUT_S = 240


def wait_for(what: str, probe, timeout: float, serve_log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(1.0)
    pytest.fail(f"no {what} within {timeout:.0f} s; serve log:\n{serve_log.read_text()[-3000:]}")


@pytest.fixture
def served(tmp_path, sms_spam, prefect_api):
    """`transferflow serve CONFIG` in a child process; interrupted (Ctrl-C) by its PID at the end."""
    from flows.runtime import ALLOCATOR_SETTINGS

    data = csv_slice(sms_spam, tmp_path / "sms.csv", {"ham": 30, "spam": 15})
    config = sms_config(tmp_path, data, tmp_path / "work", model={"max_tokens": 16}, train={"head_epochs": 10},
                        registry={"model_name": MODEL})
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve", str(config), "--incoming", str(tmp_path / "incoming"),
             "--drift-every", "1d"], cwd=tmp_path, env={**os.environ, **ALLOCATOR_SETTINGS},
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield config, log
    finally:
        os.kill(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_drift_event_then_a_labels_event_start_retrains_of_the_served_config(served):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    from tasks.labeling.events import emit_labels_added

    config, log = served
    with get_client(sync_client=True) as client:
        def registered():  # the runner registers the deployments one after another
            slug = f"spam-filter-v1-{hashlib.sha256(MODEL.encode()).hexdigest()[:8]}"
            names = (f"transfer-learning/retrain-{slug}", f"drift-check/drift-check-{slug}")
            found = [_deployment(client, name) for name in names]
            automations = (f"retrain {MODEL} on drift", f"retrain {MODEL} on new labels")
            return all(found) and all(client.read_automations_by_name(name) for name in automations) and found

        retrain, drift = wait_for("both deployments and the triggers", registered, 120, log)
        assert retrain.parameters == {"config_path": str(config), "trigger": "schedule"}
        assert [s.schedule.cron for s in retrain.schedules] == ["0 3 * * 1"]
        assert drift.parameters["config_path"] == str(config)
        assert [s.schedule.interval.total_seconds() for s in drift.schedules] == [86400]

        [automation] = client.read_automations_by_name(f"retrain {MODEL} on drift")
        assert automation.trigger.expect == {"transferflow.drift.detected"}
        [automation] = client.read_automations_by_name(f"retrain {MODEL} on new labels")
        assert automation.trigger.expect == {"transferflow.labels.added"}
        time.sleep(3)  # the server's trigger service picks up new automations within a few seconds
        emit_event(event="transferflow.drift.detected", payload={"config_path": str(config)},
                   resource={"prefect.resource.id": f"transferflow.model.{MODEL}", "prefect.resource.name": MODEL})
        EventsWorker.drain_all(timeout=30)

        runs_of_retrain = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[retrain.id]))

        def finished_run(trigger: str):
            runs = client.read_flow_runs(flow_run_filter=runs_of_retrain)
            return next((r for r in runs if r.state and r.state.is_final() and r.parameters["trigger"] == trigger),
                        None)

        run = wait_for("finished drift-triggered `retrain` run", lambda: finished_run("drift"), RUN_TIMEOUT_S, log)
        assert run.state.is_completed(), f"{run.state}\n{log.read_text()[-3000:]}"
        assert run.parameters == {"config_path": str(config), "trigger": "drift"}
        assert run.name.startswith(f"{MODEL}-drift-") and {f"model:{MODEL}", "trigger:drift"} <= set(run.tags)
        digest = hashlib.sha256(MODEL.encode()).hexdigest()[:8]  # slugging changed the name: one-to-one suffix
        for name in (f"transferflow-retrain-spam-filter-v1-{digest}", f"transferflow-promote-spam-filter-v1-{digest}"):
            limit = client.read_global_concurrency_limit_by_name(name)
            assert limit.limit == 1 and limit.active_slots == 0  # created, and released after the run

        assert emit_labels_added(MODEL, str(config), "pull-0001", corrected=1, added=0, source="test") is True
        EventsWorker.drain_all(timeout=30)
        run = wait_for("finished labels-triggered `retrain` run", lambda: finished_run("labels"), RUN_TIMEOUT_S, log)
        assert run.state.is_completed(), f"{run.state}\n{log.read_text()[-3000:]}"
        assert run.parameters == {"config_path": str(config), "trigger": "labels"}
        assert run.name.startswith(f"{MODEL}-labels-") and {"trigger:labels", "decision:nothing-new"} <= set(run.tags)


def _deployment(client, name: str):
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None


def test_serve_with_a_server_that_does_not_answer_says_which_variable_to_fix(tmp_path, sms_spam):
    from flows.local_server import free_port

    data = csv_slice(sms_spam, tmp_path / "sms.csv", {"ham": 10, "spam": 10})
    config = sms_config(tmp_path, data, tmp_path / "work", model={"max_tokens": 16}, train={"head_epochs": 10},
                        registry={"model_name": MODEL})
    dead = f"http://127.0.0.1:{free_port()}/api"
    code, output = run_transferflow(["serve", str(config), "--incoming", "in"], cwd=tmp_path, PREFECT_API_URL=dead)
    assert code == 2 and f"PREFECT_API_URL={dead} does not answer" in output and "Fix:" in output, output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1


def test_serve_without_a_server_starts_one_on_loopback_and_stops_it_by_pid(tmp_path, sms_spam):
    """Its UI is told its own API address (not port 4200); SIGTERM ends serving and the server."""
    import json
    import re
    import urllib.request

    from flows.runtime import ALLOCATOR_SETTINGS

    data = csv_slice(sms_spam, tmp_path / "sms.csv", {"ham": 10, "spam": 10})
    config = sms_config(tmp_path, data, tmp_path / "work", model={"max_tokens": 16}, train={"head_epochs": 10},
                        registry={"model_name": MODEL})
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    log, server_pid = tmp_path / "serve.log", None
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve", str(config), "--incoming", "in"], cwd=tmp_path,
            env={**env, **ALLOCATOR_SETTINGS, "PREFECT_HOME": str(tmp_path / "home")},
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    try:
        started = wait_for("local server", lambda: re.search(r"PID (\d+)\); UI at (http://127\.0\.0\.1:\d+),",
                                                             log.read_text()), 180, log)
        server_pid, ui = int(started[1]), started[2]
        wait_for("served deployments", lambda: "being served" in log.read_text(), 120, log)
        with urllib.request.urlopen(f"{ui}/ui-settings", timeout=10) as answer:
            assert json.load(answer)["api_url"] == f"{ui}/api"
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
        with pytest.raises(ProcessLookupError):
            os.kill(server_pid, 0)
    finally:
        for pid in (process.pid, server_pid):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        process.wait()
