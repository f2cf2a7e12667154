"""Two workdirs, one real `mlflow server` and one real `prefect server`: the split history is the
registry model's, on the server, so the test promise holds across workdirs and across a reset.

The story, in one module-scoped sequence of real flow runs (in process) and one real command:
1. workdir A validates alone: its history lives in A (no server yet);
2. A runs against the server: A's history is imported there, version 1 is registered;
3. workdir B validates and runs on grown data against the server: it uses that history (every old
   example keeps its split), records there, creates no local store, and the test ledger counts
   A's evaluation;
4. `split reset` against the server says what it does to the champion comparison;
5. A runs again: the champion is compared only on the test examples it never trained on, and a
   warm start from it (`retrain.start_from: champion`, checked in process against the server, as
   the flow's starting point checks it) is refused. Every count is recounted from the runs'
   logged manifests.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tasks.core.errors import SpecError
from tasks.registry.warm_start import check_never_saw_test
from tests.integration.conftest import csv_slice, run_transferflow, sms_config
from tests.integration.evidence import version_evidence
from tests.mlflow_server import MlflowServer

pytestmark = pytest.mark.integration
MODEL = "shared-sms"
ALLOW_SMALL_COMPARISONS = {"min_fresh_test": 5}


def logged_splits(client: MlflowClient, run_id: str) -> dict[str, list[str]]:
    """The split manifest a run logged (its `split/` artifact): what it trained, selected and tested on."""
    [manifest] = [f for f in client.list_artifacts(run_id, "split") if not f.is_dir]
    with tempfile.TemporaryDirectory() as folder:
        return json.loads(Path(client.download_artifacts(run_id, manifest.path, folder)).read_text())["splits"]


@pytest.fixture(scope="module")
def story(tracking_server: MlflowServer, tmp_path_factory):
    """The flows in process (the server is reached through MLFLOW_TRACKING_URI, as a user sets it);
    the reset through the command, whose words matter."""
    from flows.transfer_learning import transfer_learning, validate_only
    from tests.conftest import shared_dataset

    folder = tmp_path_factory.mktemp("shared-history")
    sms = shared_dataset("sms_spam") / "sms_spam.csv"
    first = csv_slice(sms, folder / "first.csv", {"ham": 60, "spam": 30})
    grown = csv_slice(sms, folder / "grown.csv", {"ham": 100, "spam": 50})  # the first rows, and more
    work_a, work_b = folder / "a" / "work", folder / "b" / "work"
    config_a = sms_config(folder / "a", first, work_a, registry={"model_name": MODEL}, gate=ALLOW_SMALL_COMPARISONS)
    config_b = sms_config(folder / "b", grown, work_b, registry={"model_name": MODEL}, gate=ALLOW_SMALL_COMPARISONS)
    validate_only(str(config_a))                                   # A alone: its history in its workdir
    local_history = json.loads((work_a / "splits" / MODEL / "assignments.json").read_text())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
        transfer_learning(str(config_a))                           # A meets the server
        _, validated_b = validate_only(str(config_b))              # B, grown data
        b_stores = sorted(p.name for p in work_b.iterdir())
        transfer_learning(str(config_b))
        reset = run_transferflow(["split", "reset", MODEL, "--workdir", str(work_a), "--yes"], cwd=folder,
                                 MLFLOW_TRACKING_URI=tracking_server.url)
        config_a = sms_config(folder / "a", grown, work_a, registry={"model_name": MODEL},
                              gate=ALLOW_SMALL_COMPARISONS)
        transfer_learning(str(config_a))                           # A again, after the reset
    return validated_b.split.notes, reset, local_history, b_stores, MlflowClient(tracking_server.url,
                                                                                  tracking_server.url)


def versions(client: MlflowClient) -> list:
    return sorted(client.search_model_versions(f"name = '{MODEL}'"), key=lambda v: int(v.version))


def test_a_workdir_history_is_imported_and_every_workdir_shares_it(story):
    b_notes, _, local_history, b_stores, client = story
    v1, v2 = versions(client)[:2]
    evidence_1, evidence_2 = version_evidence(client, v1), version_evidence(client, v2)
    assert evidence_1["split_history"] == evidence_2["split_history"] == local_history["history"]
    a_splits, b_splits = logged_splits(client, v1.run_id), logged_splits(client, v2.run_id)
    split_in_b = {i: name for name, ids in b_splits.items() for i in ids}
    assert all(split_in_b[i] == name for name, ids in a_splits.items() for i in ids)  # nothing moved
    assert {i: local_history["splits"][i] for ids in a_splits.values() for i in ids} == \
        {i: name for name, ids in a_splits.items() for i in ids}  # A's local assignments, as imported
    assert "mlflow.db" not in b_stores and "mlartifacts" not in b_stores  # validate recorded on the server
    kept = re.search(r"(\d+) example\(s\) kept their recorded split; (\d+) new", " ".join(b_notes))
    assert kept and int(kept[1]) >= sum(map(len, a_splits.values())) and int(kept[2]) > 0, b_notes
    # The ledger, shared: A's evaluation read A's test ids, which are all in B's test split.
    assert int(evidence_2["test_examples_seen_before"]) == len(set(a_splits["test"]) & set(b_splits["test"])) > 0
    assert evidence_2["previous_champion"] == "1" and "champion_test_examples_left_out" not in evidence_2
    assert "champion_test_metric" in evidence_2  # compared on the whole split: v1 never trained on any of it


def test_after_a_reset_the_champion_is_never_scored_or_reused_on_what_it_trained_on(story):
    _, (code, said), _, _, client = story
    assert code == 0, said
    assert "left out of its comparison with the next challenger" in said
    assert "retrain.start_from: champion is refused" in said
    newest = versions(client)[-1]
    evidence = version_evidence(client, newest)
    champion = client.get_model_version(MODEL, evidence["previous_champion"])
    trained_on = {i for name in ("train", "val") for i in logged_splits(client, champion.run_id)[name]}
    lineage_parent = version_evidence(client, champion).get("warm_started_from", "none")
    if lineage_parent != "none":  # the champion's warm-start lineage trained on these too
        parent = client.get_model_version(MODEL, lineage_parent)
        trained_on |= {i for name in ("train", "val") for i in logged_splits(client, parent.run_id)[name]}
    test_ids = logged_splits(client, newest.run_id)["test"]
    overlap = len(trained_on & set(test_ids))
    assert overlap > 0, "the reset on grown data should put some of the champion's examples in the test split"
    assert evidence["split_history"] != version_evidence(client, champion)["split_history"]
    with pytest.raises(SpecError) as refused:  # what `retrain.start_from: champion` meets in this run
        check_never_saw_test(client, MODEL, champion, test_ids)
    assert f"trained on {overlap} of this run's {len(test_ids)} test examples" in str(refused.value)
    assert "Fix: set retrain.start_from: pretrained" in str(refused.value)
    assert evidence["champion_test_examples_left_out"] == str(overlap)
    if len(test_ids) - overlap >= ALLOW_SMALL_COMPARISONS["min_fresh_test"]:
        assert "champion_test_metric" in evidence, evidence
        assert f"({overlap} it trained on left out)" in evidence["decision_reason"]
    else:
        assert "fewer than gate.min_fresh_test" in evidence["champion_comparison"]
    assert evidence["test_examples_seen_before"] == "0"  # a new history: its ledger starts again
