"""Step 3a's shards: fixed by the data alone, and each written to the cache as it finishes, so a
crash part-way keeps every finished shard and the rerun computes only the rest. (The task's own
function runs here, without a Prefect engine; the Dask integration test runs the task.)"""

from __future__ import annotations

import numpy as np
import pytest

from tasks.config.families import model_spec
from tasks.config.spec import RuntimeSpec
from tasks.steps.embed import embed_shard, fixed_shards
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
    calls = [{"model": model, "runtime": RuntimeSpec(), "workdir": tmp_path, "ids": shard,
              "inputs": [texts[ids.index(i)] for i in shard], "batch_size": 4} for shard in fixed_shards(ids, 4)]
    broken = [*calls[:2], {**calls[2], "inputs": calls[2]["inputs"][:1]}]  # the third shard fails
    with task_runner(RuntimeSpec()) as run_all, pytest.raises(ValueError):
        run_all(embed_shard.fn, broken)
    backbone = load_backbone(model)
    cache = open_cache(tmp_path, backbone)
    assert cache.missing(ids) == ids[8:]  # the two finished shards are in the cache
    with task_runner(RuntimeSpec()) as run_all:
        done = run_all(embed_shard.fn, calls)
    assert [d.computed for d in done] == [0, 0, 4]
    np.testing.assert_allclose(open_cache(tmp_path, backbone).get(ids), embed_inputs(backbone, texts, 4), atol=1e-5)
