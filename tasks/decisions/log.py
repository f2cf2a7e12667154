"""The decision log of a run: what the validation curves said after each stage and what was done
about it, so "why did it stop there?" has a written answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Decisions:
    """The decision log: {stage, action, reason, numbers} per decision, in order."""

    entries: list[dict[str, Any]] = field(default_factory=list)

    def add(self, stage: str, action: str, reason: str, numbers: dict[str, float] | None = None) -> None:
        self.entries.append({"stage": stage, "action": action, "reason": reason, "numbers": numbers or {}})
        print(f"Decision after {stage}: {action}: {reason}")

    def after(self, stage: str) -> str | None:
        return next((e["action"] for e in reversed(self.entries) if e["stage"] == stage), None)


DRIVING_NUMBERS = ("best_val_metric", "best_before", "baseline_val_metric", "best_epoch", "epochs", "guard_value")


def decisions_markdown(entries: list[dict[str, Any]], metric_key: str, selected: str | None = None) -> str:
    lines = [f"# Decisions ({metric_key} on validation)", "", "| stage | action | reason | numbers |",
             "| --- | --- | --- | --- |"]
    for entry in entries:
        numbers = ", ".join(f"{key} {value:.4g}" for key, value in entry["numbers"].items() if key in DRIVING_NUMBERS)
        reason = entry["reason"].replace("|", "\\|")
        lines.append(f"| {entry['stage']} | `{entry['action']}` | {reason} | {numbers} |")
    if selected:
        lines += ["", f"Selected on validation: **{selected}** (never chosen with the test split)."]
    return "\n".join(lines) + "\n"
