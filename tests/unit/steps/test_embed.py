"""Step 3a's shards: fixed by the data alone, and each written to the cache as it finishes, so a
crash part-way keeps every finished shard and the rerun computes only the rest. (The task's own
function runs here, without a Prefect engine; the Dask integration test runs the task.)"""

from __future__ import annotations

import numpy as np
import pytest

from tasks.config.families import model_spec
from tasks.config.spec import RuntimeSpec
from tasks.steps.embed import embed_shard, fixed_shards, missing_per_shard
from tasks.steps.runners import task_runner


def test_shards_are_the_sorted_distinct_ids_cut_at_the_shard_size():
    ids = [f"id-{i:03d}" for i in range(10)]
    shards = fixed_shards(list(reversed(ids)) + ids[:3], 4)
    assert shards == [ids[0:4], ids[4:8], ids[8:10]]
    assert fixed_shards(ids, 4) == shards  # the same data, in any order, gives the same shards


def test_a_crash_keeps_every_finished_shard_and_the_rerun_computes_only_the_rest(tmp_path):
    from tasks.models.backbones import load_backbone
    from tasks.models.features import embed_inputs, open_cache

    model = model_spec(dict(family="hf_text", name="all-MiniLM-L6-v2", max_tokens=16))
    texts = [f"message number {i} about {'money' if i % 2 else 'dinner'}" for i in range(12)]
    ids = [f"id-{i:02d}" for i in range(12)]
    backbone = load_backbone(model)

    def calls(shards: list[list[str]]) -> list[dict]:
        return [{"model": model, "runtime": RuntimeSpec(), "workdir": tmp_path, "ids": shard,
                 "inputs": [texts[ids.index(i)] for i in shard], "batch_size": 4} for shard in shards]

    first = calls(missing_per_shard(open_cache(tmp_path, backbone), ids, 4))
    assert [c["ids"] for c in first] == [ids[0:4], ids[4:8], ids[8:12]]
    broken = [*first[:2], {**first[2], "inputs": first[2]["inputs"][:1]}]  # the third shard fails
    with task_runner(RuntimeSpec()) as run_all, pytest.raises(ValueError, match="nothing was cached"):
        run_all(embed_shard.fn, broken)
    assert open_cache(tmp_path, backbone).missing(ids) == ids[8:]  # the two finished shards are kept
    rerun = calls(missing_per_shard(open_cache(tmp_path, backbone), ids, 4))
    assert [c["ids"] for c in rerun] == [ids[8:12]]
    with task_runner(RuntimeSpec()) as run_all:
        assert [d.computed for d in run_all(embed_shard.fn, rerun)] == [4]
    assert missing_per_shard(open_cache(tmp_path, backbone), ids, 4) == []
    np.testing.assert_allclose(open_cache(tmp_path, backbone).get(ids), embed_inputs(backbone, texts, 4), atol=1e-5)


def test_dask_without_prefect_dask_installed_is_one_error_with_the_fix(monkeypatch):
    import importlib.util

    from tasks.core.errors import SpecError
    from tasks.steps.runners import require_prefect_dask

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "prefect_dask" else real(name))
    with pytest.raises(SpecError, match=r"prefect-dask is not installed\. Fix: pip install 'transferflow\[dask\]'"):
        require_prefect_dask()
    monkeypatch.undo()
    require_prefect_dask()  # installed here (make test installs the extra): no error
