"""`transferflow serve` without a server: what the two deployments carry, the same triggers as
deployments/prefect.yaml's, and bad options answered in one line before anything starts."""

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from flows.serve import build_deployments, drift_trigger, labels_trigger, parse_every, plan
from tasks.core.errors import TransferflowError
from tests.conftest import write_config

CONFIG = """
task: Flag spam.
metric: {{name: accuracy, target: 0.5}}
data: {{kind: csv_text, path: {data}, classes: [ham, spam]}}
model: {{family: hf_text, name: all-MiniLM-L6-v2}}
registry: {{model_name: SMS_spam}}
workdir: {workdir}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "sms.csv").write_text("text,label\nhi,ham\nwin,spam\n")
    return write_config(tmp_path, CONFIG.format(data=tmp_path / "sms.csv", workdir=tmp_path / "work"))


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("6h", 21600), (" 1d", 86400)])
def test_durations(text, seconds):
    assert parse_every(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["0h", "6", "1w", "h", "-1d", "1.5h"])
def test_bad_durations_are_refused(text):
    with pytest.raises(TransferflowError, match="--drift-every"):
        parse_every(text)


def test_the_deployments_carry_the_absolute_config_schedules_and_the_drift_trigger(config, monkeypatch):
    monkeypatch.chdir(config.parent)
    retrain, drift = build_deployments(plan(Path("config.yaml"), Path("incoming"), "15 4 * * *", "6h"))
    slug = f"sms-spam-{hashlib.sha256(b'SMS_spam').hexdigest()[:8]}"  # SMS_spam, slugged one-to-one
    assert (retrain.name, drift.name) == (f"retrain-{slug}", f"drift-check-{slug}")
    assert retrain.parameters == {"config_path": str(config), "trigger": "schedule"}
    assert [s.schedule.cron for s in retrain.schedules] == ["15 4 * * *"]
    on_drift, on_labels = retrain.triggers
    assert on_drift.expect == {"transferflow.drift.detected"}
    assert on_drift.match.model_dump() == {"prefect.resource.id": "transferflow.model.SMS_spam"}
    assert on_drift.parameters == {"config_path": str(config), "trigger": "drift"}
    assert on_labels.name == "retrain SMS_spam on new labels"
    assert on_labels.expect == {"transferflow.labels.added"}  # what `label pull` emits
    assert on_labels.match.model_dump() == {"prefect.resource.id": "transferflow.model.SMS_spam"}
    assert on_labels.parameters == {"config_path": str(config), "trigger": "labels"}
    assert drift.parameters == {"config_path": str(config), "incoming": str(config.parent / "incoming"),
                                "trigger": "schedule"}
    assert [s.schedule.interval for s in drift.schedules] == [timedelta(hours=6)]
    assert retrain.entrypoint == "flows.transfer_learning.transfer_learning"  # any cwd can run it


@pytest.mark.parametrize(("options", "named"), [(["--cron", "every monday"], "--cron 'every monday'"),
                                                (["--drift-every", "soon"], "--drift-every 'soon'")])
def test_bad_options_exit_2_with_one_line(config, options, named):
    result = CliRunner().invoke(app, ["serve", str(config), "--incoming", "in", *options])
    assert result.exit_code == 2 and named in result.output and "Fix:" in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_two_models_served_on_one_server_get_their_own_deployments(tmp_path):
    """Named per model: serving a second config never re-points the first one's deployments."""
    names = set()
    for model in ("sms-spam", "support-tickets"):
        folder = tmp_path / model
        folder.mkdir()
        (folder / "data.csv").write_text("text,label\nhi,ham\n")
        config = write_config(folder, CONFIG.format(data=folder / "data.csv", workdir=folder / "work")
                              .replace("model_name: SMS_spam", f"model_name: {model}"))
        names |= {d.name for d in build_deployments(plan(config, folder / "incoming", "0 3 * * 1", "1d"))}
    assert names == {"retrain-sms-spam", "drift-check-sms-spam", "retrain-support-tickets",
                     "drift-check-support-tickets"}


def test_prefect_yaml_retrains_on_the_same_drift_and_labels_triggers_as_serve():
    """deployments/prefect.yaml's triggers, read as `prefect deploy` reads them, equal the ones
    `serve` registers for its model (digits) and config: a missing or mis-matched one fails here."""
    from prefect.events import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    shipped = yaml.safe_load((Path(__file__).resolve().parents[3] / "deployments" / "prefect.yaml").read_text())
    retrain = next(d for d in shipped["deployments"] if d["name"] == "retrain-digits")
    config = retrain["parameters"]["config_path"]
    assert config == "{{ $PWD }}/configs/digits-demo.yaml"
    as_deployed = TypeAdapter(DeploymentTriggerTypes)  # what `prefect deploy` validates each trigger with
    read = [as_deployed.validate_python(trigger).model_dump() for trigger in retrain["triggers"]]
    assert read == [drift_trigger("digits", config).model_dump(), labels_trigger("digits", config).model_dump()]
