"""The decision log of a run: what the validation curves said after each stage and what was done
about it, so "why did it stop there?" has a written answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tasks.core.numbers import significant


@dataclass
class Decisions:
    """The decision log: {stage, action, reason, numbers} per decision, in order."""

    entries: list[dict[str, Any]] = field(default_factory=list)

    def add(self, stage: str, action: str, reason: str, numbers: dict[str, float] | None = None) -> None:
        self.entries.append({"stage": stage, "action": action, "reason": reason, "numbers": numbers or {}})
        print(f"Decision after {stage}: {action}: {reason}")

    def after(self, stage: str) -> str | None:
        return next((e["action"] for e in reversed(self.entries) if e["stage"] == stage), None)


DRIVING_NUMBERS = ("best_val_metric", "best_before", "baseline_val_metric", "best_epoch", "epochs", "guard_value",
                   "max_stages", "candidate_rank", "candidates", "extra_epochs")


def decisions_markdown(entries: list[dict[str, Any]], metric_key: str, selected: str | None = None) -> str:
    """A short table (stage, action, the stage's validation metric), then each decision's reason
    and the numbers that drove it, one per line at 3 significant digits: a table cell of reasons
    and numbers runs off a narrow page (the Prefect UI's)."""
    lines = [f"# Decisions ({metric_key} on validation)", "", f"| stage | action | validation {metric_key} |",
             "| --- | --- | ---: |"]
    lines += [f"| {e['stage']} | `{e['action']}` | {significant(e['numbers'].get('best_val_metric'))} |"
              for e in entries]
    if selected:
        lines += ["", f"Selected on validation: **{selected}** (never chosen with the test split)."]
    for entry in entries:
        lines += ["", f"## {entry['stage']}: `{entry['action']}`", "", entry["reason"]]
        numbers = [(key, value) for key, value in entry["numbers"].items() if key in DRIVING_NUMBERS]
        if numbers:
            lines += [""] + [f"- {key}: {significant(value)}" for key, value in numbers]
    return "\n".join(lines) + "\n"
