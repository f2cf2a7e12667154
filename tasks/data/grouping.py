"""Keys that put copies of one example together before the split, with no model: a group never
straddles train / validation / test, so a near-copy of a test example cannot sit in train.

Texts: the text casefolded, Unicode-normalized (NFKC), with every run of characters that are not
letters or digits turned into one space. "Sorry, I'll call later" and "sorry i'll call later!!"
are one group. Exact copies share a key too (their content hash is the same example already).

Images: two images are near-copies when their 64-bit perceptual hashes (`imagehash.phash` of the
upright image, as a model sees it) differ in at most MAX_HASH_DISTANCE (2) bits AND their 32x32
RGB thumbnails (the picture the pHash summarizes, in colour and with its actual values) differ
by a root mean square of at most MAX_THUMBNAIL_RMS (8, on the 0-255 scale). A group is a
connected set of near-copies, keyed by its smallest example id; an image with no near-copy, or one
that cannot be read, keeps its content hash (`example_id`) as its key.

Why both, measured: a JPEG re-encode (quality 70, 90), a resize (0.5x, 0.9x, 2x) or both, of each
of the 397 hymenoptera photos, keeps the pHash in 93-96% of cases and within 2 bits in 100%
(the pHash sets as many bits as it clears, so distances are even: 2 is one swapped pair), with a
thumbnail RMS of at most 3.7: all 2,382 such copies join their original. But the pHash keeps only
the signs of 64 coarse DCT coefficients, so images of one simple structure share it without being
copies: among the 5,000 MNIST digits of the demo, pHash equality alone makes 20 groups of
different handwritten digits (43 images, up to 4, one mixing a 1 and a 7), and a 2-bit radius
alone chains 500 digits into 159 groups (up to 32; 8 mix labels). Their thumbnails differ by an
RMS of at least 12.1 (no two MNIST digits are within 8 at all), so the thumbnail check merges
none. It also keeps nearly uniform images of one layout but different colours apart (they share a
pHash), unless their colours are within that distance. The 398 hymenoptera photos form no group
(their closest pHashes are 14 bits apart). Cost: one decode per image plus one more per
candidate; 5,000 MNIST digits in about 1.6 s, the 398 photos in about 1.2 s (2 CPUs). With a
cache folder (the flow's `<workdir>/phash/`) each image's pHash is kept by its content hash, so a
retrain decodes only new images (and the candidates' thumbnails), not all of them again.
Near-copies that are cropped, recoloured or flipped are not found here: the embedding check of the
leakage audit looks for them after the split.

Sound files: equal samples once decoded, mixed to mono, resampled to 16 kHz and quantised to 16 bits
(`tasks.core.audio.content_key`): the same recording in another lossless container or sample
format. Trimmed, re-mixed or lossily re-encoded copies are left to the leakage check's embeddings.
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tasks.core.hashing import sha256_text

if TYPE_CHECKING:
    from PIL.Image import Image as PilImage

_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)

AUDIO_KEY_RATE = 16_000  # Hz: the rate sound files are compared at, whatever model reads them
THUMBNAIL_SIDE = 32  # the pHash's own working size: it sees a 32x32 greyscale picture
MAX_HASH_DISTANCE = 2  # bits: a pHash has as many bits set as clear, so distances are even
MAX_THUMBNAIL_RMS = 8.0  # 0-255 scale
# What a group of each modality holds, in words (for the split's notes).
NEAR_COPY_RULE = {
    "text": "same text up to case, spacing and punctuation",
    "image": f"same picture up to re-encoding and resizing: pHashes at most {MAX_HASH_DISTANCE} bits apart and "
             f"32x32 thumbnails within RMS {MAX_THUMBNAIL_RMS:g} of 255",
    "audio": f"same sound up to container and sample format: equal samples once decoded, mixed to mono, resampled "
             f"to {AUDIO_KEY_RATE // 1000} kHz and quantised to 16 bits",
}


def normalized_text(text: str) -> str:
    return _NOT_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def group_keys(examples: pd.DataFrame, modality: str, hash_cache: Path | None = None) -> pd.Series:
    """One key per row of `examples` (columns example_id, input): equal keys, one group. The keys of
    a modality without an entry in GROUP_KEYS are the example ids (exact copies only)."""
    keyed = GROUP_KEYS.get(modality)
    if keyed is None:
        return examples["example_id"]
    return pd.Series(keyed(list(examples["input"]), list(examples["example_id"]), hash_cache), index=examples.index)


def text_group_keys(texts: list[object], example_ids: list[str], _: Path | None = None) -> list[str]:
    """Texts equal up to case, spacing and punctuation share one key; an empty one keeps its id."""
    return [sha256_text("text:" + normalized_text(text)) if isinstance(text, str) and normalized_text(text)
            else example_id for text, example_id in zip(texts, example_ids, strict=True)]


def audio_group_keys(paths: list[object], example_ids: list[str], _: Path | None = None) -> list[str]:
    """Sound files whose decoded samples are equal (`tasks.core.audio.content_key`) share the
    smallest of their example ids as key; an unreadable file keeps its own."""
    from tasks.core.audio import content_key

    smallest: dict[str, str] = {}
    keys: list[str | None] = []
    for path, example_id in zip(paths, example_ids, strict=True):
        try:
            key = content_key(path, AUDIO_KEY_RATE)
        except Exception:  # libsndfile's errors vary by format; the odd-input check names the file
            key = None
        keys.append(key)
        if key is not None:
            smallest[key] = min(smallest.get(key, example_id), example_id)
    return [smallest[key] if key is not None else example_id for key, example_id in zip(keys, example_ids,
                                                                                      strict=True)]


def image_group_keys(paths: list[object], example_ids: list[str], hash_cache: Path | None = None) -> list[str]:
    """The group key of each image (see the module docstring): its example id, or the smallest
    example id among the near-copies it is connected to. `hash_cache`: a folder keeping each
    image's pHash by example id (its content hash), read first and added to."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    digests = perceptual_hashes(paths, example_ids, hash_cache)
    hashes = {row: int(digest, 16) for row, digest in enumerate(digests) if digest is not None}
    rows = np.array(list(hashes), dtype=np.int64)
    candidates = _near_hashes(rows, np.array(list(hashes.values()), dtype=np.uint64))
    thumbnails: dict[int, np.ndarray | None] = {}
    for row in {row for pair in candidates for row in pair}:
        thumbnails[row] = thumbnail(paths[row])
    near = [(a, b) for a, b in candidates if _close(thumbnails[a], thumbnails[b])]
    keys = list(example_ids)
    if not near:
        return keys
    first, second = np.array(near).T
    graph = coo_matrix((np.ones(len(near)), (first, second)), shape=(len(paths), len(paths)))
    _, component = connected_components(graph, directed=False)
    smallest: dict[int, str] = {}
    for row, label in enumerate(component):
        smallest[label] = min(smallest.get(label, example_ids[row]), example_ids[row])
    return [smallest[label] for label in component]


def perceptual_hashes(paths: list[object], example_ids: list[str], cache: Path | None) -> list[str | None]:
    """Each image's pHash (None: unreadable), from the cache where it has one; the others are
    computed and stored as one new shard (written atomically, so a killed run leaves no half file).
    Shards live under the imagehash version that computed them: another version starts afresh."""
    from importlib.metadata import version

    cache = cache / f"imagehash-{version('imagehash')}" if cache is not None else None
    known = _read_hash_shards(cache) if cache is not None else {}
    fresh = {example_id: perceptual_hash(path) for path, example_id in zip(paths, example_ids, strict=True)
             if example_id not in known}
    if cache is not None and fresh:
        from tasks.core.atomic import write_text_atomic

        shard = sha256_text("\n".join(sorted(fresh)))[:24]   # named by its ids: one set, one file
        cache.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cache / f"{shard}.json", json.dumps(fresh))
    return [known[i] if i in known else fresh[i] for i in example_ids]


def _read_hash_shards(folder: Path) -> dict[str, str | None]:
    """Every readable shard's hashes; a file that is not a JSON object of id -> hex or null is skipped."""
    known: dict[str, str | None] = {}
    for shard in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            entries = json.loads(shard.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(entries, dict) and all(v is None or isinstance(v, str) for v in entries.values()):
            known.update(entries)
    return known


def perceptual_hash(path: object) -> str | None:
    """The 64-bit pHash of the upright image as hex, or None if it cannot be read."""
    import imagehash

    image = _upright(path)
    return None if image is None else str(imagehash.phash(image))


def thumbnail(path: object) -> np.ndarray | None:
    """The image as 32x32 RGB, resampled as the pHash does (Lanczos), flattened; None if unreadable."""
    from PIL import Image

    image = _upright(path)
    if image is None:
        return None
    small = image.convert("RGB").resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.float64).ravel()


def _upright(path: object) -> PilImage | None:
    """The decoded image as a model sees it (EXIF orientation applied), or None if unreadable."""
    from PIL import Image, ImageOps

    if not isinstance(path, str | Path):
        return None
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)  # a copy: usable once the file is closed
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def _near_hashes(rows: np.ndarray, hashes: np.ndarray) -> list[tuple[int, int]]:
    """Pairs of `rows` whose hashes differ in at most MAX_HASH_DISTANCE bits. Such hashes agree on
    at least one of MAX_HASH_DISTANCE + 1 bit ranges (pigeonhole), so only rows that share one
    range's bits are compared: near-linear, not all pairs."""
    pairs: set[tuple[int, int]] = set()
    edges = np.linspace(0, 64, MAX_HASH_DISTANCE + 2).astype(int)
    for low, high in itertools.pairwise(edges.tolist()):
        part = (hashes >> np.uint64(low)) & np.uint64((1 << (high - low)) - 1)
        order = np.argsort(part, kind="stable")
        for bucket in np.split(order, np.flatnonzero(np.diff(part[order])) + 1):
            for i, one in enumerate(bucket[:-1]):
                others = bucket[i + 1:]
                close = others[np.bitwise_count(hashes[others] ^ hashes[one]) <= MAX_HASH_DISTANCE]
                pairs.update((int(min(rows[one], rows[other])), int(max(rows[one], rows[other]))) for other in close)
    return sorted(pairs)


def _close(first: np.ndarray | None, second: np.ndarray | None) -> bool:
    """Thumbnails within MAX_THUMBNAIL_RMS of each other (an unreadable one is close to nothing)."""
    if first is None or second is None:
        return False
    return float(np.sqrt(np.mean((first - second) ** 2))) <= MAX_THUMBNAIL_RMS


# One entry per modality: its near-copy keys from (inputs, example ids, the pHash cache folder).
GROUP_KEYS: dict[str, Callable[[list[object], list[str], Path | None], list[str]]] = {
    "image": image_group_keys,
    "audio": audio_group_keys,
    "text": text_group_keys,
}
