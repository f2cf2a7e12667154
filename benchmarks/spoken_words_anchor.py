"""A simple anchor for the audio path: logistic regression on MFCC means and standard deviations,
on the same split the recipe used, against the recipe (configs/spoken-words.yaml as shipped); and
what the spectrogram's `image_size` does to a frozen MobileNetV2's embeddings on that split.

The recipe runs first (the `words` case of finetune_quality.py: a fresh workdir, the data made with
espeak-ng); its split manifest then gives the anchor its train / validation / test clips. MFCCs:
13 coefficients from 40 HTK mel bands (25 ms windows every 10 ms, the spectrogram family's own
filterbank), their mean and standard deviation over the clip's frames; C is chosen on validation
among 0.01-100, then the test split is scored once. The image-size rows fit the same logistic
regression on frozen MobileNetV2 embeddings of the shipped front end (128 mels x 101 frames) left at
its size, and resized to 160 and 224 px. Prints the rows; never asserts.
Run by hand (see benchmarks/README.md):  python benchmarks/spoken_words_anchor.py
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
from finetune_quality import run_case
from offline import offline_preamble

REPO = offline_preamble()
RATE, N_MFCC, N_MELS = 16_000, 13, 40


def mfcc_statistics(path: Path) -> np.ndarray:
    """[2 * N_MFCC]: each coefficient's mean and standard deviation over the clip's frames."""
    import torch
    from scipy.fft import dct

    from tasks.core.audio import decode, fixed_length
    from tasks.models.backbones.spectrogram_models import mel_filterbank

    samples = fixed_length(decode(path, RATE), RATE)
    window, hop, n_fft = 400, 160, 512
    power = torch.stft(torch.from_numpy(samples), n_fft, hop, window, torch.hann_window(window),
                       return_complex=True).abs().square().numpy()
    mels = mel_filterbank(RATE, n_fft, N_MELS).numpy() @ power
    coefficients = dct(np.log(mels + 1e-10), axis=0, norm="ortho")[:N_MFCC]
    return np.concatenate([coefficients.mean(axis=1), coefficients.std(axis=1)])


def split_files(data: Path, manifest: Path) -> dict[str, list[Path]]:
    files = {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in data.glob("*/*.wav")}
    return {name: [files[i] for i in ids] for name, ids in json.loads(manifest.read_text())["splits"].items()}


def mfcc_anchor(splits: dict[str, list[Path]]) -> dict[str, float]:
    return linear_probe({name: np.stack([mfcc_statistics(p) for p in paths]) for name, paths in splits.items()},
                        {name: [p.parent.name for p in paths] for name, paths in splits.items()})


def frozen_probe(splits: dict[str, list[Path]], image_size: int | None) -> dict[str, float]:
    """The same probe on frozen MobileNetV2 embeddings of the shipped front end at `image_size`."""
    import yaml

    from tasks.config.families import model_spec
    from tasks.models.backbones import load_backbone
    from tasks.models.features import embed_inputs

    raw = dict(yaml.safe_load((REPO / "configs" / "spoken-words.yaml").read_text())["model"], image_size=image_size)
    backbone = load_backbone(model_spec(raw))
    features = {name: embed_inputs(backbone, [str(p) for p in paths], 32) for name, paths in splits.items()}
    return linear_probe(features, {name: [p.parent.name for p in paths] for name, paths in splits.items()})


def linear_probe(features: dict[str, np.ndarray], labels: dict[str, list[str]]) -> dict[str, float]:
    """Standardized logistic regression; C chosen on validation, then test scored once."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best: tuple[float, float, object] | None = None
    for c in (0.01, 0.1, 1.0, 10.0, 100.0):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
        model.fit(features["train"], labels["train"])
        score = f1_score(labels["val"], model.predict(features["val"]), average="macro")
        if best is None or score > best[0]:
            best = (score, c, model)
    assert best is not None
    val, c, model = best
    test = f1_score(labels["test"], model.predict(features["test"]), average="macro")  # type: ignore[attr-defined]
    return {"val": val, "test": test, "C": c}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="spoken-words-anchor-") as root:
        result, wall = run_case("words", Path(root))
        folder = Path(root) / "words"
        manifest = next(p for p in (folder / "work" / "splits" / "spoken-words").glob("*.json")
                        if p.name != "assignments.json")
        splits = split_files(folder / "data", manifest)
        mfcc = mfcc_anchor(splits)
        probes = {size: frozen_probe(splits, size) for size in (None, 160, 224)}
    print("| model | validation macro_f1 | test macro_f1 |")
    print("| --- | ---: | ---: |")
    print(f"| recipe: MobileNetV2 on log-mel, {result['selected']} ({wall:.0f} s) | {result['final_val']:.4f} | "
          f"{result['test']:.4f} |")
    print(f"| anchor: logistic regression on MFCC mean + sd (C {mfcc['C']:g}) | {mfcc['val']:.4f} | "
          f"{mfcc['test']:.4f} |")
    for size, probe in probes.items():
        shown = f"resized to {size} px" if size else "not resized (128 x 101)"
        print(f"| probe: logistic regression on frozen MobileNetV2, spectrogram {shown} (C {probe['C']:g}) | "
              f"{probe['val']:.4f} | {probe['test']:.4f} |")


if __name__ == "__main__":
    main()
