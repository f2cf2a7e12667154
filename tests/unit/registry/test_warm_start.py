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
    never = lambda: pytest.fail("no test id is read without a champion")  # noqa: E731
    assert champion_starting_point(MlflowClient(uri, uri), load_spec(config), tmp_path, never) is None
    assert RetrainSpec().start_from == "pretrained"
    with pytest.raises(ValueError, match="'pretrained' or 'champion'"):
        RetrainSpec.model_validate({"start_from": "latest"})


def registered_lineage(tmp_path):
    """Version 1 trained on a, b; version 2 (warm-started from 1) on c, d; 2 is the champion."""
    from tests.registered_models import TEXT_MODEL, Store, open_store, register, save_checkpoint

    store = open_store(tmp_path)
    checkpoint = save_checkpoint(tmp_path, TEXT_MODEL, 2)
    register(store, checkpoint, TEXT_MODEL, ["ham", "spam"], "sms", trained_on=["a", "b"])
    second = Store(tmp_path, store.client, store.client.create_run(store.client.get_run(
        store.run_id).info.experiment_id).info.run_id)
    version = register(second, checkpoint, TEXT_MODEL, ["ham", "spam"], "sms", trained_on=["c", "d"]).version
    store.client.set_model_version_tag("sms", version, "warm_started_from", "1")
    return store.client, store.client.get_model_version("sms", version)


def test_what_a_champion_learned_from_includes_its_warm_start_lineage(tmp_path):
    from tasks.registry.lineage import learned_from

    client, champion = registered_lineage(tmp_path)
    lineage = learned_from(client, "sms", champion)
    assert lineage.ids == {"a", "b", "c", "d"} and lineage.versions == ("2", "1") and not lineage.unreadable


@pytest.mark.parametrize("test_ids, seen", [(["x", "y"], 0), (["a", "x"], 1), (["a", "c", "d", "y"], 3)])
def test_a_warm_start_from_a_champion_that_trained_on_test_examples_is_refused(tmp_path, test_ids, seen):
    from tasks.registry.warm_start import check_never_saw_test

    client, champion = registered_lineage(tmp_path)
    if not seen:
        check_never_saw_test(client, "sms", champion, test_ids)
        return
    with pytest.raises(SpecError) as refused:
        check_never_saw_test(client, "sms", champion, test_ids)
    assert f"trained on {seen} of this run's {len(test_ids)} test examples" in str(refused.value)
    assert "Fix: set retrain.start_from: pretrained" in str(refused.value) and "\n" not in str(refused.value)


def test_a_champion_whose_training_ids_cannot_be_read_is_never_a_starting_point(tmp_path):
    from tasks.registry.warm_start import check_never_saw_test

    client, champion = registered_lineage(tmp_path)
    client.set_model_version_tag("sms", champion.version, "warm_started_from", "7")  # no such version
    with pytest.raises(SpecError, match="warm-started from version 7, which cannot be read"):
        check_never_saw_test(client, "sms", client.get_model_version("sms", champion.version), ["x"])
