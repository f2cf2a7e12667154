"""The starting-point rules of `retrain.start_from: champion` that need no flow run."""

import re

import pytest
from mlflow import MlflowClient

from tasks.config.families import model_spec
from tasks.config.spec import RetrainSpec
from tasks.core.errors import SpecError
from tasks.registry.warm_start import champion_starting_point, check_same_base_model
from tests.conftest import write_config

MINILM = model_spec(dict(family="hf_text", name="all-MiniLM-L6-v2"))


def test_only_the_same_base_model_can_be_a_starting_point():
    check_same_base_model(MINILM, MINILM.model_copy(update={"max_tokens": 64}), "m", "3")  # input size may change
    expected = ("champion version 3 of 'm' was trained from timm tf_efficientnet_lite0 and this config names "
                "torchvision mobilenet_v2. Fix: set retrain.start_from: pretrained")
    with pytest.raises(SpecError, match=re.escape(expected)):
        check_same_base_model(model_spec(dict(family="timm", name="tf_efficientnet_lite0")),
                              model_spec(dict(family="torchvision", name="mobilenet_v2")), "m", "3")


def test_no_champion_means_the_pretrained_weights(tmp_path):
    from tasks.config.loading import load_spec

    config = write_config(tmp_path, f"""
task: Flag spam.
metric: {{name: accuracy, target: 0.5}}
data: {{kind: csv_text, path: {tmp_path / 'x.csv'}}}
model: {{family: hf_text, name: all-MiniLM-L6-v2}}
retrain: {{start_from: champion}}
registry: {{model_name: nobody-yet}}
""")
    (tmp_path / "x.csv").write_text("text,label\na,b\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert champion_starting_point(MlflowClient(uri, uri), load_spec(config), tmp_path) is None
    assert RetrainSpec().start_from == "pretrained"
    with pytest.raises(ValueError, match="'pretrained' or 'champion'"):
        RetrainSpec.model_validate({"start_from": "latest"})
