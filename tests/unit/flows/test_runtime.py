"""The CLI restarts itself once with the allocator settings, and the restarted process imports
this package, never a `tasks.py` or `flows/` that happens to sit in the user's current folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

from flows.runtime import ALLOCATOR_SETTINGS

TRANSFERFLOW = Path(sys.executable).parent / "transferflow"
RECORD_START = f"""import json, os, sys
record = {{"argv": sys.orig_argv, "env": {{name: os.environ.get(name) for name in {sorted(ALLOCATOR_SETTINGS)}}}}}
with open(os.environ["STARTS_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")
"""


def run_console_script(args: list[str], cwd: Path, **extra_env: str) -> subprocess.CompletedProcess:
    """`transferflow ARGS` as a user starts it: without the allocator settings, so it restarts."""
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_SETTINGS} | extra_env
    return subprocess.run([str(TRANSFERFLOW), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_restarted_process_has_the_allocator_settings(tmp_path):
    """A sitecustomize module runs at every interpreter start, the restarted one included, and
    records what each process was started with."""
    hook, log = tmp_path / "hook", tmp_path / "starts.jsonl"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(RECORD_START)
    result = run_console_script(["schema"], tmp_path, PYTHONPATH=str(hook), STARTS_LOG=str(log))
    assert result.returncode == 0, result.stderr
    first, restarted = [json.loads(line) for line in log.read_text().splitlines()]
    assert first["env"] == {name: None for name in ALLOCATOR_SETTINGS}
    assert restarted["env"] == ALLOCATOR_SETTINGS
    assert restarted["argv"][1:] == ["-P", "-m", "flows.cli", "schema"]


def test_a_users_tasks_and_flows_in_the_current_folder_do_not_shadow_the_package(tmp_path):
    (tmp_path / "tasks.py").write_text('raise SystemExit("shadowed")\n')
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "__init__.py").write_text('raise SystemExit("shadowed")\n')
    result = run_console_script(["schema"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["title"] == "Spec"


def test_prefect_home_defaults_to_the_work_folder_and_a_users_choice_wins(tmp_path, monkeypatch):
    from flows.runtime import apply_defaults

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREFECT_HOME")
    apply_defaults()
    assert os.environ["PREFECT_HOME"] == str(tmp_path / ".transferflow" / "prefect")
    assert not (tmp_path / ".transferflow").exists()  # created only by commands that run a flow
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "mine"))
    apply_defaults()
    assert os.environ["PREFECT_HOME"] == str(tmp_path / "mine")


ENGINE_STARTED_EARLY = """
from flows.runtime import apply_defaults, start_local_engine_early
apply_defaults()
wait = start_local_engine_early()
wait()
import httpx
from prefect.server.api.server import SubprocessASGIServer

started = SubprocessASGIServer()
healthy_before_any_flow = httpx.get(started.api_url + "/health").status_code == 200

from prefect import flow, get_client

@flow
def which_api() -> str:
    return str(get_client(sync_client=True).api_url)

print(healthy_before_any_flow, started.api_url.rstrip("/"), which_api().rstrip("/"))
"""


def test_the_local_engine_started_early_is_the_one_the_flow_uses(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-P", "-c", ENGINE_STARTED_EARLY], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    healthy, started_api, used_api = result.stdout.split()[-3:]
    assert healthy == "True" and started_api == used_api and started_api.startswith("http://127.0.0.1:")
