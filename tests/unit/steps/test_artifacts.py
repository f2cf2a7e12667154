"""What the Prefect UI shows is readable there: no link it cannot follow (`file://`, a relative
file name), plots as images only when a tracking server can serve them (else their path), table
numbers at 3 significant digits, and a cut table says how much it shows ("top 50 of 123")."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pandas as pd
import prefect.artifacts
import pytest

from tasks.steps.select import write_decision_log
from tasks.steps.split import _publish_label_issues
from tasks.steps.step import figure_markdown, for_prefect_ui, publish_markdown, publish_table

ARTIFACTS = "file:///srv/work/mlartifacts/1/abc123/artifacts"


@pytest.fixture
def published(monkeypatch) -> list[dict]:
    """Every artifact the code under test creates, as Prefect would receive it."""
    made: list[dict] = []
    monkeypatch.setattr(prefect.artifacts, "create_markdown_artifact", lambda **kwargs: made.append(kwargs))
    monkeypatch.setattr(prefect.artifacts, "create_table_artifact", lambda **kwargs: made.append(kwargs))
    return made


def tracking(store: str) -> SimpleNamespace:
    run = SimpleNamespace(info=SimpleNamespace(artifact_uri=ARTIFACTS))
    client = SimpleNamespace(get_run=lambda run_id: run, log_text=lambda *args: None)
    return SimpleNamespace(run_id="abc123", experiment_id="1", store=store, client=client)


def test_links_the_prefect_ui_cannot_follow_become_plain_paths_and_web_links_stay():
    markdown = ("Files: [label_issues.csv](label_issues.csv), [the docs](data_docs/index.html)\n"
                "Curves: `file:///srv/work/plots/curves.png` and ![curves](file:///srv/a%20b.png)\n"
                "[MLflow run](http://mlflow:5000/#/experiments/1/runs/abc) ![c](https://x/get-artifact?path=p.png)")
    shown = for_prefect_ui(markdown)
    assert "file://" not in shown
    assert "Files: `label_issues.csv`, the docs (`data_docs/index.html`)" in shown
    assert "Curves: `/srv/work/plots/curves.png` and curves (`/srv/a b.png`)" in shown
    assert "[MLflow run](http://mlflow:5000/#/experiments/1/runs/abc) ![c](https://x/get-artifact?path=p.png)" in shown


def test_publish_markdown_never_sends_a_file_link(published):
    publish_markdown("k", f"see [curves]({ARTIFACTS}/plots/a.png) or {ARTIFACTS}/plots/b.png", "d")
    assert "file:" not in published[0]["markdown"] and "/srv/work/mlartifacts/1/abc123/artifacts/plots/b.png" in \
        published[0]["markdown"]


def test_a_plot_is_an_image_served_by_the_tracking_server_else_its_local_path():
    served = figure_markdown(tracking("http://mlflow.example:5000/"), "plots/learning_curves.png", "Curves")
    assert served == ("![Curves](http://mlflow.example:5000/get-artifact?path=plots/learning_curves.png"
                      "&run_uuid=abc123)")
    local = figure_markdown(tracking("sqlite:////srv/work/mlflow.db"), "plots/learning_curves.png", "Curves")
    assert local == "Curves: `/srv/work/mlartifacts/1/abc123/artifacts/plots/learning_curves.png`"


@pytest.mark.parametrize("store", ["sqlite:////srv/work/mlflow.db", "http://mlflow.example:5000"])
def test_the_decisions_artifact_shows_its_plots_without_file_links_and_keeps_numbers_short(published, store):
    spec = SimpleNamespace(metric=SimpleNamespace(key="macro_f1"), registry=SimpleNamespace(model_name="digits"))
    entries = [{"stage": "finetune-1", "action": "stop_max_stages", "reason": "finetune.max_stages (1) is reached",
                "numbers": {"best_val_metric": 0.96523, "best_before": 3.855e-16, "best_epoch": 4.0}}]
    write_decision_log.fn(spec, entries, "finetune-1", tracking(store))
    markdown = published[0]["markdown"]
    assert "file:" not in markdown and "- best_before: <0.001" in markdown and "| 0.965 |" in markdown
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    if store.startswith("http"):
        assert [url.split("?")[1] for url in images] == [
            "path=plots/learning_curves.png&run_uuid=abc123", "path=plots/per_class_validation.png&run_uuid=abc123"]
    else:
        assert not images and "`/srv/work/mlartifacts/1/abc123/artifacts/plots/per_class_validation.png`" in markdown


def test_table_floats_are_3_significant_digits_never_scientific_or_false_zeros(published):
    publish_table("k", [{"candidate": "a", "val macro_f1": 0.964285714, "inputs/s": 1234.567, "p": 3.855e-16,
                         "parameters": 2_236_682, "peak memory MiB": None}], "d")
    assert published[0]["table"] == [{"candidate": "a", "val macro_f1": "0.964", "inputs/s": "1,235", "p": "<0.001",
                                      "parameters": 2_236_682, "peak memory MiB": None}]


def label_issues(n: int) -> pd.DataFrame:
    return pd.DataFrame({"example_id": [f"{i:064x}" for i in range(n)],
                         "input": [f"/data/ants/{i}.jpg" for i in range(n)],
                         "given_label": "ants", "suggested_label": "bees", "score": [3.855e-16] + [0.0123456] * (n - 1),
                         "p_suggested": 0.87654, "source": [f"ants/{i}.jpg" for i in range(n)]})


def test_the_label_issues_table_says_top_50_of_all_and_reads_file_first_hash_short_and_last(published):
    spec = SimpleNamespace(registry=SimpleNamespace(model_name="insects"), modality="image")
    _publish_label_issues(spec, None, label_issues(123))
    table, description = published[0]["table"], published[0]["description"]
    assert description.startswith("Labels the data disputes: top 50 of 123, most doubtful first")
    assert len(table) == 50
    assert list(table[0]) == ["source", "given label", "suggested label", "score", "p(suggested)", "id"]
    assert table[0] == {"source": "ants/0.jpg", "given label": "ants", "suggested label": "bees", "score": "<0.001",
                        "p(suggested)": "0.877", "id": "0" * 8}
    assert table[1]["score"] == "0.0123"
    published.clear()
    _publish_label_issues(SimpleNamespace(registry=spec.registry, modality="text"), None,
                          label_issues(3).assign(input="free text " * 20))
    assert published[0]["description"].startswith("Labels the data disputes: all 3, most doubtful first")
    assert list(published[0]["table"][0])[:2] == ["source", "text"] and len(published[0]["table"][0]["text"]) == 80
