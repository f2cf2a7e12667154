"""The labelling guideline is part of the contract: step 1 logs its sha256 and the file with the run,
the model card names it with its sha256, and the card says when it differs from the one the
champion was trained under (read from the champion's own run)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tasks.config.loading import load_spec
from tasks.config.spec import OneModelSpec
from tasks.reports.model_card import CardFacts, GuidelineFacts, render_model_card
from tasks.steps.card import guideline_facts
from tasks.steps.refs import TrackingRef
from tasks.steps.validate import start_tracking
from tests.conftest import write_config

CONFIG = """
task: Route banking questions.
metric: {{name: accuracy, target: 0.9}}
data: {{kind: csv_text, path: data.csv{guideline}}}
model: {{family: hf_text, name: all-MiniLM-L6-v2}}
registry: {{model_name: bank}}
"""


def one_model(tmp_path: Path, guideline: str = ", guideline: labeling.md") -> tuple[OneModelSpec, Path]:
    (tmp_path / "data.csv").write_text("text,label\nhello,a\n")
    config = write_config(tmp_path, CONFIG.format(guideline=guideline))
    spec = load_spec(config)
    return spec.with_model(spec.candidates[0]), config


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def register_as_champion(tracking: TrackingRef) -> str:
    client = tracking.client
    client.create_registered_model("bank")
    version = client.create_model_version("bank", f"{client.get_run(tracking.run_id).info.artifact_uri}/model",
                                          run_id=tracking.run_id).version
    client.set_registered_model_alias("bank", "champion", version)
    return str(version)


def test_step_1_logs_the_guideline_and_the_card_notes_a_change_from_the_champions(tmp_path):
    guideline = tmp_path / "labeling.md"
    guideline.write_text("# v1: a refund is money back\n")
    spec, config = one_model(tmp_path)
    champion_run = start_tracking.fn(spec, str(config))
    client = champion_run.client
    assert client.get_run(champion_run.run_id).data.params["data.guideline_sha256"] == sha256(guideline.read_text())
    assert [a.path for a in client.list_artifacts(champion_run.run_id, "guideline")] == ["guideline/labeling.md"]
    champion = register_as_champion(champion_run)

    unchanged = guideline_facts(spec, client, start_tracking.fn(spec, str(config)).run_id, champion)
    assert unchanged == GuidelineFacts("labeling.md", sha256("# v1: a refund is money back\n"), champion,
                                       sha256("# v1: a refund is money back\n"))
    assert len(unchanged.lines()) == 1 and "differs" not in unchanged.lines()[0]

    guideline.write_text("# v2: a refund includes chargebacks\n")
    changed = guideline_facts(spec, client, start_tracking.fn(spec, str(config)).run_id, champion)
    assert changed == GuidelineFacts("labeling.md", sha256("# v2: a refund includes chargebacks\n"), champion,
                                     sha256("# v1: a refund is money back\n"))
    card = render_model_card(card_facts(changed))
    assert f"- Labelling guideline: [labeling.md](guideline/labeling.md) (sha256 `{changed.sha256}`" in card
    assert (f"- **The labelling guideline differs from the champion's**: champion version {champion} was trained "
            f"under sha256 `{changed.champion_sha256}`") in card


def test_no_guideline_anywhere_leaves_the_card_as_it_was_and_one_dropped_is_noted(tmp_path):
    spec, config = one_model(tmp_path, guideline="")
    run = start_tracking.fn(spec, str(config))
    assert "data.guideline_sha256" not in run.client.get_run(run.run_id).data.params
    assert guideline_facts(spec, run.client, run.run_id, None) is None
    assert "guideline" not in render_model_card(card_facts(None)).lower()
    champion = GuidelineFacts(None, None, "4", "ab" * 32)  # the champion had one; this run names none
    assert champion.lines() == ["- Labelling guideline: none (data.guideline is not set)",
                                f"- **The labelling guideline differs from the champion's**: champion version 4 was "
                                f"trained under sha256 `{'ab' * 32}`. Labels made under the two may follow different "
                                "rules; compare the two files before comparing the models."]


def card_facts(guideline: GuidelineFacts | None) -> CardFacts:
    return CardFacts(
        task="Route banking questions.", metric="accuracy >= 0.9", base_model="hf_text MiniLM", base_model_source="hub",
        base_model_provenance={}, tournament=None, settings={}, data_path="data.csv", data_fingerprint="f" * 64,
        test_fingerprint="e" * 64, manifest_sha256="d" * 64, split_sizes={"train": 8, "val": 1, "test": 1},
        class_counts={"a": 5, "b": 5}, quality_warnings=[], stages=[("baseline", 0.9, "")], selected_stage="baseline",
        guard=None, operating_point="argmax", test_value=0.9, target=0.9, decision="promoted", decision_reason="ok",
        registered_version="2", mlflow_run_id="r", guideline=guideline)
