"""Recipe step 4 with several candidate base models: the ranking and the table of a tournament
(the probe's validation score, parameters, embedding width, throughput and peak memory measured
here; `max_params` and `min_throughput` drop what the hardware cannot run)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasks.config.families import FamilyOptions
from tasks.config.spec import CandidatesSpec


@dataclass(frozen=True)
class CandidateResult:
    """One candidate's row of the tournament table."""

    model: str                    # family:name (weights)
    parameters: int
    dim: int
    throughput: float | None      # inputs/s embedded on this machine (None: dropped before measuring)
    peak_memory_mib: float | None
    val_value: float | None       # the declared metric of the probe on validation
    guard_value: float | None
    guard_ok: bool
    status: str                   # "chosen", "ranked N", or "dropped: why"
    seconds: float

    def row(self, metric_key: str, guard_key: str | None) -> dict[str, Any]:
        row: dict[str, Any] = {"candidate": self.model, "status": self.status, f"val {metric_key}": self.val_value}
        if guard_key:
            row[f"val {guard_key}"] = self.guard_value
        return row | {"parameters": self.parameters, "embedding dim": self.dim, "inputs/s": self.throughput,
                      "peak memory MiB": self.peak_memory_mib, "seconds": round(self.seconds, 1)}


@dataclass(frozen=True)
class Tournament:
    """The table, and the eligible candidates best first (the fine-tuning diagnosis moves on to
    the next one when a base model gains nothing over its baseline)."""

    results: list[CandidateResult]
    ranking: list[FamilyOptions]

    @property
    def chosen(self) -> FamilyOptions:
        return self.ranking[0]

    def markdown(self, metric_key: str, guard_key: str | None) -> str:
        rows = [r.row(metric_key, guard_key) for r in self.results]
        header = list(rows[0])
        lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
        for row in rows:
            lines.append("| " + " | ".join(_cell(row[k]) for k in header) + " |")
        return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if value <= 1 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def rank_candidates(results: list[tuple[FamilyOptions, CandidateResult]]) -> list[FamilyOptions]:
    """Eligible candidates, best first: guard kept, then the metric, then throughput; ties keep
    the config's order."""
    eligible = [(index, model, r) for index, (model, r) in enumerate(results) if not r.status.startswith("dropped")]
    eligible.sort(key=lambda item: (not item[2].guard_ok, -(item[2].val_value or 0.0), -(item[2].throughput or 0.0),
                                    item[0]))
    return [model for _, model, _ in eligible]


def constraint_failure(parameters: int, throughput: float | None, constraints: CandidatesSpec) -> str | None:
    if constraints.max_params is not None and parameters > constraints.max_params:
        return f"dropped: {parameters:,} parameters > max_params {constraints.max_params:,}"
    if constraints.min_throughput is not None and throughput is not None and throughput < constraints.min_throughput:
        return f"dropped: {throughput:,.1f} inputs/s < min_throughput {constraints.min_throughput:g}"
    return None
