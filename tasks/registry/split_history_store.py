"""A registry model's split history on the tracking server, so every workdir that shares the server
shares one history (and one test split) per model.

Layout: one MLflow run per registry model in the experiment `transferflow-split-histories` (the
anchor) holds every generation of the table as an artifact `generations/<n>-<token>.json`, and a
param `generation.<n>` = `<token>` names the one that counts. MLflow refuses to change a logged
param, in every store, so logging `generation.<n>` is a compare-and-set: of two writers that both
read generation n - 1, exactly one claims n; the other re-reads and tries again. The anchor itself
is found through a pointer experiment `transferflow-split-history/<model>` whose tag names it:
experiment names are unique, so two writers creating the first history agree on one anchor (the
loser deletes the run it made and never used).

No lock is needed for correctness; the split step also holds the model's Prefect concurrency
limit when there is a Prefect server, so writers queue instead of retrying.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tasks.data.split import split_history_folder
from tasks.data.split_history import FolderHistoryStore, History, HistoryStore
from tasks.registry.tracking import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING,
    NOTE_TAG,
    client_for,
    end_run,
    experiment_id,
    internal_experiment_note,
    start_run,
)

HISTORIES_EXPERIMENT = "transferflow-split-histories"
POINTER_PREFIX = "transferflow-split-history/"
ANCHOR_TAG = "anchor_run_id"
GENERATION_PARAM = "generation."
GENERATIONS_FOLDER = "generations"


def history_store(workdir: Path, model_name: str) -> HistoryStore:
    """The workdir's folder with its own SQLite store; the tracking server when MLFLOW_TRACKING_URI
    names one (the workdir then keeps only the run manifests)."""
    folder = FolderHistoryStore(split_history_folder(workdir, model_name))
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return folder
    return MlflowHistoryStore(client_for(workdir), model_name, workdir, folder)


def reset_consequences(workdir: Path, model_name: str, alias: str) -> str:
    """What starting a new history does to the next champion comparison, said before a reset."""
    from tasks.registry.champion import current_champion
    from tasks.registry.lineage import learned_from

    if not os.environ.get("MLFLOW_TRACKING_URI") and not (workdir / "mlflow.db").exists():
        return "There is no registry yet, so no champion comparison changes."
    client = client_for(workdir)
    champion = current_champion(client, model_name, alias)
    if champion is None:
        return f"'{model_name}' has no '{alias}' yet, so no champion comparison changes."
    lineage = learned_from(client, model_name, champion)
    trained = f"trained on {len(lineage.ids)} examples" if not lineage.unreadable else "trained on examples"
    return (f"Champion version {champion.version} ('{alias}') {trained} under the current history. After the reset "
            "the new test split can hold some of them: they are left out of its comparison with the next challenger "
            "(the version's tag champion_test_examples_left_out says how many); with fewer than gate.min_fresh_test "
            "test examples left, the next run is not compared with it and the target alone decides; and "
            "retrain.start_from: champion is refused while the test split holds any of them.")


class MlflowHistoryStore:
    """The history on an MLflow tracking store; a workdir history found when the server has none
    for the model is imported once (its id and table kept), so the first shared run does not
    start a fresh history whose test split holds the champion's training examples."""

    def __init__(self, client: MlflowClient, model_name: str, workdir: Path, local: FolderHistoryStore) -> None:
        self.client, self.model_name, self.workdir, self.local = client, model_name, workdir, local

    def read(self) -> History:
        stored = self._stored()
        if stored is not None:
            if self.local.path.exists() and self.local.read().id != stored.id:
                print(f"WARNING {self.local.path} is not the split history of '{self.model_name}' on the tracking "
                      f"server, which every workdir sharing it uses: the server's ({stored.id[:8]}) applies")
            return stored
        if not self.local.path.exists():
            return History.new()
        local = self.local.read()
        imported = History(local.id, local.started, 1, local.splits)
        if self.write(imported):
            print(f"Split history of '{self.model_name}' imported from {self.local.path} to the tracking server "
                  f"({len(local.splits)} assignments, history {local.id[:8]}): every workdir sharing it now uses it")
            return imported
        return self.read()  # another workdir stored one first

    def write(self, history: History) -> bool:
        anchor = self._anchor(create=True)
        assert anchor is not None
        token = uuid.uuid4().hex[:16]
        number = f"{history.generation:06d}"
        self.client.log_text(anchor, history.to_json(), f"{GENERATIONS_FOLDER}/{number}-{token}.json")
        key = GENERATION_PARAM + number
        try:
            self.client.log_param(anchor, key, token)
        except MlflowException:
            claimed = self.client.get_run(anchor).data.params.get(key)
            if claimed is None or claimed == token:
                raise  # not a lost race: the server failed
            return False
        return True

    def retire(self) -> str | None:
        """A new, empty history as the next generation; every earlier one stays on the server."""
        while True:
            current = self.read()
            if current.generation == 0:
                return None
            fresh = History.new()
            if self.write(History(fresh.id, fresh.started, current.generation + 1, {})):
                self.local.retire()
                return f"generation {current.generation} of {self.describe()}"

    def describe(self) -> str:
        anchor = self._anchor(create=False)
        where = f"MLflow run {anchor} in experiment '{HISTORIES_EXPERIMENT}'" if anchor else "not stored yet"
        return f"the split history of '{self.model_name}' on {self.client.tracking_uri} ({where})"

    def _stored(self) -> History | None:
        anchor = self._anchor(create=False)
        if anchor is None:
            return None
        params = self.client.get_run(anchor).data.params
        numbers = sorted(key.removeprefix(GENERATION_PARAM) for key in params if key.startswith(GENERATION_PARAM))
        if not numbers:
            return None
        newest = numbers[-1]
        artifact = f"{GENERATIONS_FOLDER}/{newest}-{params[GENERATION_PARAM + newest]}.json"
        with tempfile.TemporaryDirectory() as folder:
            return History.from_json(Path(self.client.download_artifacts(anchor, artifact, folder)).read_text())

    def _anchor(self, create: bool) -> str | None:
        pointer = POINTER_PREFIX + self.model_name
        existing = self.client.get_experiment_by_name(pointer)
        if existing is not None:
            return existing.tags[ANCHOR_TAG]
        if not create:
            return None
        histories = experiment_id(self.client, HISTORIES_EXPERIMENT, self.workdir, internal_experiment_note(
            "the split histories shared through this tracking server: one run per model, whose artifacts are the "
            "generations of its sticky train / validation / test assignment."))
        run_id = start_run(self.client, histories, f"{self.model_name} split history",
                           tags={"registered_model": self.model_name})
        end_run(self.client, run_id, succeeded=True)  # params and artifacts can still be added
        try:
            self.client.create_experiment(pointer, tags={
                ANCHOR_TAG: run_id, "registered_model": self.model_name, NOTE_TAG: internal_experiment_note(
                    f"a pointer to {self.model_name}'s split history (run {run_id} in '{HISTORIES_EXPERIMENT}'); "
                    "it holds no runs."), EXPERIMENT_KIND_TAG: MODEL_TRAINING})
        except MlflowException:
            self.client.delete_run(run_id)  # made here and never used: another writer's anchor won
            won = self.client.get_experiment_by_name(pointer)
            if won is None:
                raise
            return won.tags[ANCHOR_TAG]
        return run_id

