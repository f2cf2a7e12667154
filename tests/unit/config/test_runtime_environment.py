"""TRANSFERFLOW_DEVICE beats runtime.device and TRANSFERFLOW_TASK_RUNNER beats runtime.task_runner,
so a work pool's job decides the device (or a command's --task-runner the runner) of any config; a
wrong value, or a device the machine lacks, is one error naming the variable."""

from __future__ import annotations

import re

import pytest

from tasks.config.loading import load_spec
from tasks.core.errors import SpecError
from tests.conftest import write_config


def config_with(tmp_path, runtime: str = ""):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "x.csv").write_text("text,label\na,b\n")
    return write_config(tmp_path, f"""
task: Flag spam.
metric: {{name: accuracy, target: 0.5}}
data: {{kind: csv_text, path: {tmp_path / 'x.csv'}}}
model: {{family: hf_text, name: all-MiniLM-L6-v2}}
registry: {{model_name: m}}
{runtime}
""")


def test_the_environment_beats_the_config_and_unset_leaves_it(tmp_path, monkeypatch):
    config = config_with(tmp_path, "runtime: {device: cpu}")
    monkeypatch.delenv("TRANSFERFLOW_DEVICE", raising=False)
    assert load_spec(config).runtime.device == "cpu"
    monkeypatch.setenv("TRANSFERFLOW_DEVICE", "cuda")
    assert load_spec(config).runtime.device == "cuda"
    assert load_spec(config_with(tmp_path / "bare")).runtime.device == "cuda"  # no runtime block at all
    monkeypatch.setenv("TRANSFERFLOW_DEVICE", " ")
    assert load_spec(config).runtime.device == "cpu"  # blank counts as unset


def test_a_value_that_is_no_device_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERFLOW_DEVICE", "gpu")
    with pytest.raises(SpecError, match=re.escape(
            "TRANSFERFLOW_DEVICE is 'gpu' in the environment. Fix: set it to one of auto, cpu, cuda, mps")):
        load_spec(config_with(tmp_path))


def test_a_device_the_machine_lacks_names_where_it_was_asked_for(monkeypatch):
    import torch

    from tasks.models.devices import resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the missing-device error cannot happen here")
    monkeypatch.setenv("TRANSFERFLOW_DEVICE", "cuda")
    with pytest.raises(SpecError, match="TRANSFERFLOW_DEVICE is 'cuda', but this machine has no cuda device"):
        resolve_device("cuda")
    monkeypatch.delenv("TRANSFERFLOW_DEVICE")
    with pytest.raises(SpecError, match=r"runtime\.device is 'cuda', but this machine has no cuda device"):
        resolve_device("cuda")


def test_the_task_runner_variable_beats_the_config_and_a_wrong_one_names_it(tmp_path, monkeypatch):
    config = config_with(tmp_path, "runtime: {task_runner: dask, dask: {workers: 3}}")
    monkeypatch.delenv("TRANSFERFLOW_TASK_RUNNER", raising=False)
    spec = load_spec(config)
    assert (spec.runtime.task_runner, spec.runtime.dask.workers, spec.runtime.dask.address) == ("dask", 3, None)
    monkeypatch.setenv("TRANSFERFLOW_TASK_RUNNER", "local")
    assert load_spec(config).runtime.task_runner == "local"
    monkeypatch.setenv("TRANSFERFLOW_TASK_RUNNER", "ray")
    with pytest.raises(SpecError, match=re.escape("TRANSFERFLOW_TASK_RUNNER is 'ray' in the environment. Fix: set it "
                                                  "to one of local, dask, or unset it")):
        load_spec(config)
