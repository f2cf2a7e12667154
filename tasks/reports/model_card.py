"""The model card: what a reviewer needs to trust (or reject) a registered model, in one page."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.registry.tracking import GUIDELINE_ARTIFACTS  # beside model_card.md in the run's artifacts


@dataclass(frozen=True)
class GuidelineFacts:
    """The labelling guideline this run's labels follow, and the one the champion's followed."""

    file: str | None              # its file name; None when the config names none
    sha256: str | None            # as logged at step 1
    champion_version: str | None  # the champion the challenger was compared with; None: no champion
    champion_sha256: str | None   # the guideline sha256 the champion's run logged; None: none logged

    def lines(self) -> list[str]:
        here = (f"- Labelling guideline: [{self.file}]({GUIDELINE_ARTIFACTS}/{self.file}) (sha256 `{self.sha256}`, "
                "logged with the run)" if self.sha256 else "- Labelling guideline: none (data.guideline is not set)")
        if self.champion_version is None or self.champion_sha256 == self.sha256:
            return [here]
        champion = (f"champion version {self.champion_version} was trained under sha256 `{self.champion_sha256}`"
                    if self.champion_sha256 else f"champion version {self.champion_version} logged no guideline")
        return [here, f"- **The labelling guideline differs from the champion's**: {champion}. Labels made under the "
                      "two may follow different rules; compare the two files before comparing the models."]


@dataclass(frozen=True)
class CardFacts:
    task: str
    metric: str
    base_model: str
    base_model_source: str
    base_model_provenance: dict[str, str]  # family, name, weights source, weights sha256, parameters
    tournament: str | None                 # the candidates table (markdown) when several were compared
    settings: dict[str, object]
    data_path: str
    data_fingerprint: str
    test_fingerprint: str
    manifest_sha256: str
    split_sizes: dict[str, int]
    class_counts: dict[str, int]
    quality_warnings: list[str]
    stages: list[tuple[str, float, str]]  # (stage, validation metric, notes)
    selected_stage: str
    guard: str | None        # the guard of a recall/precision contract and its test value; None: no guard
    operating_point: str     # how the model turns probabilities into an answer
    test_value: float
    target: float
    decision: str
    decision_reason: str
    registered_version: str
    mlflow_run_id: str
    guideline: GuidelineFacts | None = None  # None: neither this run nor the champion named one
    classic_anchor: str | None = None  # the classic anchor's validation score and the chosen model against it
    contract_gap: str | None = None    # a per-class contract missed on test: by how much, and what would close it


def render_model_card(facts: CardFacts) -> str:
    lines = [
        f"# Model card: {facts.task}", "",
        f"**Decision: {facts.decision.upper()}** — {facts.decision_reason}", "",
        "## Contract",
        f"- Success metric: {facts.metric}",
        f"- Test result: {facts.test_value:.4f} (target {facts.target:g})",
        *([f"- Guard: {facts.guard}"] if facts.guard else []),
        f"- Operating point: {facts.operating_point}",
        *([f"- Classic anchor: {facts.classic_anchor}"] if facts.classic_anchor else []),
        *([f"- Contract gap: {facts.contract_gap}"] if facts.contract_gap else []), "",
        "## Base model",
        f"- {facts.base_model}",
        f"- Source: {facts.base_model_source}",
        *(f"- {key.capitalize()}: {value}" for key, value in facts.base_model_provenance.items()), "",
        *(["### Tournament (probe head on validation; the test split was not read)", "", facts.tournament, ""]
          if facts.tournament else []),
        "## Data",
        f"- Path: `{facts.data_path}`",
        f"- Dataset fingerprint: `{facts.data_fingerprint}`",
        f"- Test-set fingerprint: `{facts.test_fingerprint}`",
        f"- Split manifest sha256: `{facts.manifest_sha256}`",
        "- Split sizes: " + ", ".join(f"{k} {v}" for k, v in facts.split_sizes.items()),
        "- Class counts: " + ", ".join(f"{k} {v}" for k, v in facts.class_counts.items()),
        *(facts.guideline.lines() if facts.guideline else []),
    ]
    if facts.quality_warnings:
        lines.append("- Data warnings (label audit and split): " + "; ".join(facts.quality_warnings))
    lines += ["", "## Stages (chosen on validation only)", "", "| stage | validation metric | notes |",
              "| --- | ---: | --- |"]
    for stage, value, notes in facts.stages:
        marker = " (selected)" if stage == facts.selected_stage else ""
        lines.append(f"| {stage}{marker} | {value:.4f} | {notes} |")
    lines += ["", "## Settings", ""]
    lines += [f"- `{key}`: {value}" for key, value in facts.settings.items()]
    lines += ["", "## Provenance",
              f"- Registered version: {facts.registered_version}",
              f"- MLflow run: `{facts.mlflow_run_id}`"]
    return "\n".join(lines) + "\n"
