"""`family: hf_audio` on tiny random encoders of five architectures, built from a config alone
(nothing downloaded): wav2vec2 (post-norm), HuBERT (stable layer norm: a norm after the stack),
AST (patch embeddings, [CLS]), Whisper's encoder (a fixed input window) and CLAP's audio tower
(Swin stages, which cannot be cut). Groups, determinism, the exact frozen-prefix cut, decoding
(stereo, another rate) and the cache key."""

import json

import numpy as np
import pytest
import torch
from scipy.signal import resample_poly

from tasks.config.families import model_spec
from tasks.core.errors import SpecError
from tasks.models.backbones import load_backbone
from tests.sounds import chirp, noise_burst, tone, write

CONV = {"conv_dim": [16, 16, 16], "conv_stride": [5, 4, 4], "conv_kernel": [10, 8, 8],
        "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2}
SMALL = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
WAV2VEC2_EXTRACTOR = {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
                      "sampling_rate": 16_000, "padding_value": 0.0, "do_normalize": True}
MODELS = {
    "wav2vec2": ({"model_type": "wav2vec2", "num_hidden_layers": 4, **SMALL, **CONV},
                 {**WAV2VEC2_EXTRACTOR, "return_attention_mask": False}),
    "hubert": ({"model_type": "hubert", "num_hidden_layers": 3, "do_stable_layer_norm": True,
                "feat_extract_norm": "layer", **SMALL, **CONV},
               {**WAV2VEC2_EXTRACTOR, "return_attention_mask": True}),
    "ast": ({"model_type": "audio-spectrogram-transformer", "num_hidden_layers": 3, "patch_size": 8,
             "frequency_stride": 8, "time_stride": 8, "max_length": 64, "num_mel_bins": 16, **SMALL},
            {"feature_extractor_type": "ASTFeatureExtractor", "feature_size": 1, "sampling_rate": 16_000,
             "num_mel_bins": 16, "max_length": 64, "do_normalize": True, "mean": -4.27, "std": 4.57}),
    "whisper": ({"model_type": "whisper", "d_model": 32, "encoder_layers": 3, "decoder_layers": 1,
                 "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 64,
                 "decoder_ffn_dim": 64, "num_mel_bins": 16, "max_source_positions": 50,
                 "max_target_positions": 16, "vocab_size": 64, "pad_token_id": 1, "bos_token_id": 1,
                 "eos_token_id": 2, "decoder_start_token_id": 1, "begin_suppress_tokens": None,
                 "suppress_tokens": None},
                {"feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 16, "sampling_rate": 16_000,
                 "hop_length": 160, "chunk_length": 1, "n_fft": 400}),
    "clap": ({"model_type": "clap", "projection_dim": 16,
              "audio_config": {"hidden_size": 32, "patch_embeds_hidden_size": 16, "depths": [1, 1],
                               "num_attention_heads": [2, 2], "window_size": 4, "spec_size": 64,
                               "num_mel_bins": 16, "patch_stride": [4, 4]},
              "text_config": {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1,
                              "num_attention_heads": 2, "intermediate_size": 32}},
             {"feature_extractor_type": "ClapFeatureExtractor", "feature_size": 16, "sampling_rate": 16_000,
              "hop_length": 160, "fft_window_size": 400, "max_length_s": 1, "padding": "repeatpad",
              "truncation": "rand_trunc", "frequency_min": 50, "frequency_max": 8000}),
}
EXACT = ["wav2vec2", "hubert", "ast", "whisper"]  # a stack of layers: cut exactly; CLAP's stages are not


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    """Each architecture as a local model folder holding only its config and preprocessor config."""
    root = tmp_path_factory.mktemp("models")
    for name, (config, preprocessor) in MODELS.items():
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(config))
        (root / name / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return {name: str(root / name) for name in MODELS}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("clips")
    return {"tone": write(folder / "tone.wav", tone(440, 1.2)),
            "chirp": write(folder / "chirp.flac", chirp(300, 4000, 0.8)),
            "noise": write(folder / "noise.wav", noise_burst(0.6))}


def backbone(folders: dict, model: str, **options):
    return load_backbone(model_spec({"family": "hf_audio", "name": folders[model], "weights": "none",
                                     "max_seconds": 1.0, **options}))


def embed(audio, inputs: list) -> torch.Tensor:
    with torch.no_grad():
        return audio.embed(audio.preprocess(inputs))


@pytest.mark.parametrize("model", MODELS)
def test_groups_run_in_order_are_disjoint_and_hold_every_parameter_that_learns(model, folders, clips):
    audio = backbone(folders, model)
    groups = audio.layer_groups()
    assert len(groups) >= 3
    members = [{id(p) for p in group.parameters()} for group in groups]
    assert all(members) and len(set().union(*members)) == sum(map(len, members))
    fired: list[int] = []
    handles = [module.register_forward_hook(lambda *_, index=index: fired.append(index))
               for index, group in enumerate(groups) for module in group.modules()]
    for parameter in audio.module.parameters():
        parameter.requires_grad_(True)
    audio.embed(audio.preprocess([clips["tone"], clips["chirp"]])).square().sum().backward()
    for handle in handles:
        handle.remove()
    assert [index for position, index in enumerate(fired) if position == 0 or fired[position - 1] != index] == \
        list(range(len(groups)))
    learning = {id(p) for p in audio.module.parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert learning <= set().union(*members)
    assert len(backbone(folders, model, layer_groups=2).layer_groups()) == 2


@pytest.mark.parametrize("model", MODELS)
def test_different_clips_differ_and_the_same_clip_embeds_identically(model, folders, clips):
    audio = backbone(folders, model)
    first = embed(audio, [clips["tone"], clips["chirp"], clips["noise"]])
    assert first.shape == (3, audio.dim) and torch.isfinite(first).all()
    assert not torch.allclose(first[0], first[1]) and not torch.allclose(first[1], first[2])
    twice = embed(audio, [clips["chirp"], clips["chirp"]])
    assert torch.equal(twice[0], twice[1])
    assert torch.equal(embed(backbone(folders, model), [clips["chirp"], clips["chirp"]]), twice)  # another load


@pytest.mark.parametrize("model", EXACT)
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_the_frozen_prefix_then_the_suffix_is_the_whole_embedding(model, pooling, folders, clips):
    audio = backbone(folders, model, pooling=pooling)
    assert audio.SPLITS_EXACTLY
    batch = audio.preprocess([clips["tone"], clips["noise"]])
    with torch.no_grad():
        whole = audio.embed(batch)
        for trainable in range(len(audio.layer_groups()) + 1):
            prefix, suffix = audio.split_at(trainable)
            assert torch.allclose(suffix(prefix(batch)), whole, atol=1e-5), f"{trainable} trainable groups"


@pytest.mark.parametrize("model", ["wav2vec2", "hubert"])
def test_the_stored_prefix_outputs_give_the_uncached_classifiers_logits(model, folders, clips, tmp_path):
    """Through the real prefix cache (the stored [n, frames, d] hidden states) and SuffixClassifier."""
    from tasks.models.classifier import Classifier
    from tasks.training.prefix_cache import SuffixClassifier, compute_prefix_outputs

    audio = backbone(folders, model)
    classifier = Classifier(audio, torch.nn.Linear(audio.dim, 2)).eval()
    inputs = [clips["tone"], clips["chirp"], clips["noise"]]
    with torch.no_grad():
        expected = classifier(audio.preprocess(inputs))
        for trainable in (1, 2):
            stored = compute_prefix_outputs(audio, ["a", "b", "c"], inputs, trainable, batch_size=2,
                                            cache_dir=tmp_path)
            logits = SuffixClassifier(classifier, trainable)(stored.batch(torch.arange(3)))
            torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-4)


def test_clap_cannot_be_cut_so_its_stages_run_the_whole_encoder(folders):
    audio = backbone(folders, "clap")
    assert not audio.SPLITS_EXACTLY
    with pytest.raises(NotImplementedError):
        audio.split_at(1)


@pytest.mark.parametrize("model", ["wav2vec2", "whisper"])
def test_a_stereo_file_at_another_rate_embeds_like_its_mono_mixdown_at_the_models_rate(model, folders, tmp_path):
    left, right = chirp(200, 3000, 1.0, rate=22_050), tone(660, 1.0, rate=22_050, amplitude=0.3)
    stereo = write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), rate=22_050, subtype="FLOAT")
    mixdown = resample_poly((left + right) / 2, 320, 441).astype(np.float32)  # 22,050 Hz -> 16,000 Hz
    mono = write(tmp_path / "mono.wav", mixdown, rate=16_000, subtype="FLOAT")
    audio = backbone(folders, model)
    both = embed(audio, [stereo, mono])
    assert torch.allclose(both[0], both[1], atol=1e-3, rtol=1e-3)


def test_whisper_means_only_the_frames_that_cover_the_clip_not_its_padded_window(folders, clips):
    audio = backbone(folders, "whisper", max_seconds=0.5)  # the tiny extractor's window: 1 s, 50 frames
    batch = audio.preprocess([clips["tone"]])
    with torch.no_grad():
        hidden = audio.module(input_features=batch).last_hidden_state
        assert torch.allclose(audio.embed(batch), hidden[:, :25].mean(1), atol=1e-6)


def test_the_rate_is_the_extractors_unless_set(folders):
    assert backbone(folders, "wav2vec2").front_end.sample_rate == 16_000
    resampled = backbone(folders, "wav2vec2", sample_rate=8_000)
    assert resampled.front_end.sample_rate == resampled.front_end.extractor.sampling_rate == 8_000


def test_the_preprocessing_id_follows_the_front_end(folders):
    ids = {key: backbone(folders, "wav2vec2", **options).preprocessing_id
           for key, options in {"plain": {}, "longer": {"max_seconds": 2.0}, "rate": {"sample_rate": 8_000},
                                "cls": {"pooling": "cls"}}.items()}
    assert len(set(ids.values())) == len(ids)
    assert ids["plain"] == backbone(folders, "wav2vec2").preprocessing_id
    assert "do_normalize" in ids["plain"] and "seconds=1.0" in ids["plain"]


def test_augmentation_shifts_and_adds_noise_only_above_none(folders, clips):
    audio = backbone(folders, "wav2vec2")
    inputs = [clips["tone"], clips["chirp"]]
    assert audio.training_preprocess("none") == audio.preprocess and not audio.is_random("none")
    plain = audio.preprocess(inputs)
    for level in ("light", "standard"):
        assert audio.is_random(level)
        torch.manual_seed(1)
        first = audio.training_preprocess(level)(inputs)
        torch.manual_seed(1)
        assert torch.equal(first, audio.training_preprocess(level)(inputs))  # seeded: reproducible
        assert first.shape == plain.shape and not torch.equal(first, plain)
    with pytest.raises(ValueError, match="expected none, light or standard"):
        audio.training_preprocess("heavy")


def test_pretrained_weights_come_from_a_local_model_folder(folders, clips, tmp_path):
    """`weights` unset and `name` a folder saved with save_pretrained: its weights, not a random init."""
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(3)
    saved = AutoModel.from_config(AutoConfig.from_pretrained(folders["wav2vec2"])).eval()
    saved.save_pretrained(tmp_path / "trained")
    (tmp_path / "trained" / "preprocessor_config.json").write_text(json.dumps(MODELS["wav2vec2"][1]))
    audio = load_backbone(model_spec({"family": "hf_audio", "name": str(tmp_path / "trained"), "max_seconds": 1.0}))
    assert audio.weights.kind == "local"
    batch = audio.preprocess([clips["tone"]])
    with torch.no_grad():
        assert torch.allclose(audio.embed(batch), saved(input_values=batch).last_hidden_state.mean(1), atol=1e-6)


def test_a_fused_clap_is_refused_with_the_fix(folders, tmp_path):
    config, preprocessor = MODELS["clap"]
    fused = tmp_path / "fused"
    fused.mkdir()
    (fused / "config.json").write_text(json.dumps({**config, "audio_config": {**config["audio_config"],
                                                                              "enable_fusion": True}}))
    (fused / "preprocessor_config.json").write_text(json.dumps({**preprocessor, "truncation": "fusion"}))
    with pytest.raises(SpecError, match=r"fused CLAP.*Fix: use an unfused CLAP"):
        load_backbone(model_spec({"family": "hf_audio", "name": str(fused), "weights": "none"}))
