"""A simple anchor for the audio path: logistic regression on MFCC means and standard deviations,
on the same split the recipe used, against the recipe (configs/spoken-words.yaml as shipped).

The recipe runs first (the `words` case of finetune_quality.py: a fresh workdir, the data made with
espeak-ng); its split manifest then gives the anchor its train / validation / test clips. MFCCs:
13 coefficients from 40 HTK mel bands (25 ms windows every 10 ms, the spectrogram family's own
filterbank), their mean and standard deviation over the clip's frames; C is chosen on validation
among 0.01-100, then the test split is scored once. Prints both rows; never asserts.
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


def anchor(data: Path, manifest: Path) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    files = {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in data.glob("*/*.wav")}
    splits = json.loads(manifest.read_text())["splits"]
    features = {name: np.stack([mfcc_statistics(files[i]) for i in ids]) for name, ids in splits.items()}
    labels = {name: [files[i].parent.name for i in ids] for name, ids in splits.items()}
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
        mfcc = anchor(folder / "data", manifest)
    print("| model | validation macro_f1 | test macro_f1 |")
    print("| --- | ---: | ---: |")
    print(f"| recipe: MobileNetV2 on log-mel, {result['selected']} ({wall:.0f} s) | {result['final_val']:.4f} | "
          f"{result['test']:.4f} |")
    print(f"| anchor: logistic regression on MFCC mean + sd (C {mfcc['C']:g}) | {mfcc['val']:.4f} | "
          f"{mfcc['test']:.4f} |")


if __name__ == "__main__":
    main()
