"""Sticky splits through the real command: grow the data between two `validate` runs (real
Prefect flow, GX suite, split step) and no recorded example may change split."""

import json
from pathlib import Path

import pytest

from tests.conftest import small_image, write_config
from tests.integration.conftest import run_transferflow
from tests.integration.test_bad_input import IMAGE_CONFIG, image_folder

pytestmark = pytest.mark.integration


def manifests(workdir: Path) -> list[dict]:
    folder = workdir / "splits" / "ants"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
            if p.name != "assignments.json"]


def test_grown_data_keeps_old_splits_and_the_manifest_records_both(tmp_path):
    image_folder(tmp_path / "data", {"ants": 20, "bees": 20})
    config = write_config(tmp_path, IMAGE_CONFIG.format(data=tmp_path / "data", workdir=tmp_path / "work", extra=""))
    code, output = run_transferflow(["validate", str(config)], cwd=tmp_path)
    assert code == 0, output
    for label, colour in (("ants", 200), ("bees", 100)):  # new images, distinct from the first ones
        folder = tmp_path / "data" / label
        for i in range(20):

            small_image((16, 16), (colour, i * 11 % 256, 77)).save(folder / f"new-{i}.png")
    code, output = run_transferflow(["validate", str(config)], cwd=tmp_path)
    assert code == 0 and "40 example(s) kept their recorded split; 40 new example(s) assigned" in output, output
    first, second = manifests(tmp_path / "work")
    before = {i: name for name, ids in first["splits"].items() for i in ids}
    after = {i: name for name, ids in second["splits"].items() for i in ids}
    assert {i: after[i] for i in before} == before and len(after) == 80
    assert sum(second["new_in_this_manifest"].values()) == 40 and first["split_history"] == second["split_history"]


def test_split_reset_asks_first_and_keeps_the_old_history(tmp_path):
    image_folder(tmp_path / "data", {"ants": 10, "bees": 10})
    config = write_config(tmp_path, IMAGE_CONFIG.format(data=tmp_path / "data", workdir=tmp_path / "work", extra=""))
    assert run_transferflow(["validate", str(config)], cwd=tmp_path)[0] == 0
    history = tmp_path / "work" / "splits" / "ants" / "assignments.json"
    recorded = history.read_text()
    code, output = run_transferflow(["split", "reset", "ants", "--workdir", "work"], cwd=tmp_path)  # no answer
    assert code != 0 and "Aborted" in output and history.read_text() == recorded
    code, output = run_transferflow(["split", "reset", "ants", "--workdir", "work", "--yes"], cwd=tmp_path)
    assert code == 0 and "exposure counts start again" in output, output
    assert not history.exists()
    [retired] = history.parent.glob("assignments-retired-*.json")
    assert retired.read_text() == recorded
    code, output = run_transferflow(["split", "reset", "wasps", "--workdir", "work", "--yes"], cwd=tmp_path)
    assert code == 2 and "no split history for model 'wasps'" in output
