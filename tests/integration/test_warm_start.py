"""`retrain.start_from: champion` through the real flow: the run starts from the champion's
fine-tuned backbone (taken from its registered artifacts), embeds with those weights rather than
reusing the pretrained embeddings, says so in its tags, and refuses a champion built on another
base model before training anything."""

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from flows.transfer_learning import transfer_learning
from tasks.config.families import model_spec
from tasks.models.backbones import load_backbone
from tasks.models.classifier import Classifier, new_head
from tasks.models.features import embed_inputs, open_cache
from tests.integration.conftest import csv_slice, run_transferflow, sms_config
from tests.integration.evidence import text_labels, version_evidence, version_file
from tests.registered_models import SMALL_IMAGE_MODEL, open_store, register, save_checkpoint

pytestmark = pytest.mark.integration

TEXT_MODEL = model_spec(dict(family="hf_text", name="all-MiniLM-L6-v2", max_tokens=16))


def fine_tuned_champion(workdir: Path) -> dict[str, torch.Tensor]:
    """Register a champion whose last encoder layer moved away from the pretrained weights, as
    a fine-tuned one has; returns its encoder state."""
    backbone = load_backbone(TEXT_MODEL)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in backbone.layer_groups()[-1].parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    classifier = Classifier(backbone, new_head(backbone.dim, 2, seed=0))
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "champion.pt"
        torch.save(classifier.state_dict(), checkpoint)
        register(open_store(workdir), checkpoint, TEXT_MODEL, ["ham", "spam"], "sms-spam")
    return {name: tensor.clone() for name, tensor in backbone.module.state_dict().items()}


def test_a_retrain_starts_from_the_champions_backbone(tmp_path, sms_spam):
    data = csv_slice(sms_spam, tmp_path / "sms.csv", {"ham": 40, "spam": 30})
    workdir = tmp_path / "work"
    champion_encoder = fine_tuned_champion(workdir)
    config = sms_config(tmp_path, data, workdir, model={"max_tokens": 16}, train={"head_epochs": 15},
                        retrain={"start_from": "champion"})

    summary = transfer_learning(str(config))

    baseline = summary.stages[0]
    assert baseline.started_from == "champion v1" and "embeddings computed" in baseline.notes
    from tasks.registry.tracking import client_for

    client = client_for(workdir)
    assert client.get_run(summary.run_id).data.tags["started_from"] == "champion v1"
    version = client.get_model_version("sms-spam", summary.outcome.registration.version)
    assert version_evidence(client, version)["started_from"] == "champion v1"
    # The new version's backbone is the champion's, not the pretrained one it would start from.
    with tempfile.TemporaryDirectory() as folder:
        artifacts = version_file(client, "sms-spam", version.version, "artifacts", folder)
        [weights] = [p for p in artifacts.iterdir() if p.suffix == ".pt"]
        stored = torch.load(weights, map_location="cpu", weights_only=True)
    registered = stored["weights"] if "format_version" in stored else stored  # self-describing or a bare state dict
    pretrained = load_backbone(TEXT_MODEL).module.state_dict()
    moved = [name for name, tensor in champion_encoder.items() if not torch.equal(tensor, pretrained[name])]
    assert moved and all(torch.equal(registered[f"encoder.{name}"], champion_encoder[name]) for name in moved)
    # The embeddings the head was trained on were computed with the champion's weights, under
    # their own cache key: recompute one independently with a backbone loaded from that state.
    truth = text_labels(data)
    some_id = next(iter(truth))
    backbone = load_backbone(TEXT_MODEL)
    backbone.module.load_state_dict(champion_encoder)
    expected = embed_inputs(backbone, [truth[some_id][0]], 1)[0]
    pretrained_expected = embed_inputs(load_backbone(TEXT_MODEL), [truth[some_id][0]], 1)[0]
    assert not np.allclose(expected, pretrained_expected, atol=1e-3)
    # Two caches: the pretrained model's (the label audit of step 3b reads the first base model as
    # configured) and the champion's (what the head was trained on).
    pretrained_cache = open_cache(workdir, load_backbone(TEXT_MODEL)).folder
    caches = [p for p in (workdir / "embeddings").iterdir() if p.is_dir() and p != pretrained_cache]
    assert len(caches) == 1
    from tasks.models.features import EmbeddingCache

    cached = EmbeddingCache(caches[0].parent, caches[0].name)
    assert np.allclose(cached.get([some_id])[0], expected, atol=1e-4)


def test_a_champion_on_another_base_model_is_refused_before_training(tmp_path, sms_spam):
    data = csv_slice(sms_spam, tmp_path / "sms.csv", {"ham": 40, "spam": 30})
    workdir = tmp_path / "work"
    store = open_store(workdir)
    register(store, save_checkpoint(tmp_path, SMALL_IMAGE_MODEL, 2), SMALL_IMAGE_MODEL, ["ham", "spam"], "sms-spam")
    config = sms_config(tmp_path, data, workdir, model={"max_tokens": 16}, train={"head_epochs": 15},
                        retrain={"start_from": "champion"})

    code, output = run_transferflow(["run", str(config)], cwd=tmp_path)

    assert code == 2 and "Traceback" not in output, output
    assert ("retrain.start_from: champion, but champion version 1 of 'sms-spam' was trained from torchvision "
            "mobilenet_v2 and this config names hf_text all-MiniLM-L6-v2" in " ".join(output.split())), output
    assert [str(v.version) for v in store.client.search_model_versions("name = 'sms-spam'")] == ["1"]
    # Refused before any training: no stage checkpoint (the label audit of step 3b has embedded the
    # data by then; those embeddings stay cached for the next run).
    assert not list(workdir.glob("checkpoints/**/*.pt"))
