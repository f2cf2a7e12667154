"""Inputs no model should learn from, and examples whose label the data contradicts, taken out
before the split with their reason: never silently skipped, always in the report and the summary.

Odd inputs: what the kind's `odd_reason` says of one input (zero-byte, undecodable, tiny or
constant images; missing, empty or non-UTF-8 texts), what the loader could not read as an example
(unsupported formats), and one image under many names (a placeholder such as "image not found",
whatever its format). `data.odd_inputs: drop` (default) quarantines them; `fail` keeps them in
the table so the label-quality check stops the run listing them.
Conflicting labels: `data.conflicting_labels: drop` removes every copy of an example that appears
under two labels; `fail` (default) leaves them for the check, which stops the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from tasks.config.data_kinds.base import ClassFolderOptions
from tasks.config.spec import DataSpec
from tasks.data.table import Quarantined

if TYPE_CHECKING:
    from tasks.data.table import LoadedData

PLACEHOLDER_COPIES = 3  # the same file content under this many names is a placeholder, not data


def odd_inputs(table: pd.DataFrame, data: DataSpec) -> list[Quarantined]:
    """Every row of the table that is no fit example, with its reason (one decode per input)."""
    from tasks.data.readers import reader_for

    reader = reader_for(data)
    found = []
    copies = table.groupby("example_id")["source"].transform("count")
    for row, count in zip(table.itertuples(index=False), copies, strict=True):
        reason = reader.odd_reason(data, row.input)
        if reason is None and count >= PLACEHOLDER_COPIES and isinstance(data, ClassFolderOptions):
            reason = f"placeholder: the same {data.NOUN.removesuffix('s')} under {count} names"
        if reason is not None:
            found.append(Quarantined(str(row.source), str(row.label), reason))
    return found


def conflicting_examples(table: pd.DataFrame) -> list[Quarantined]:
    """Every copy of an example (same content) that appears under more than one label."""
    labels = table.dropna(subset=["label"]).groupby("example_id")["label"].nunique()
    disputed = table[table["example_id"].isin(labels[labels > 1].index)]
    return [Quarantined(str(row.source), str(row.label), "the same content also appears under "
                        + ", ".join(sorted(set(disputed.loc[disputed["example_id"] == row.example_id, "label"])
                                           - {row.label})))
            for row in disputed.itertuples(index=False)]


@dataclass(frozen=True)
class TakenOut:
    """Step 2a's result: the table the audit and the split see, and what the policies took out."""

    table: pd.DataFrame
    odd: list[Quarantined]
    conflicts: list[Quarantined]


def take_out(loaded: LoadedData, data: DataSpec) -> TakenOut:
    """Odd inputs out (`odd_inputs: drop`; under `fail` they stay for the check to stop on), then
    every copy of an example under two labels (`conflicting_labels: drop`)."""
    odd = [*loaded.quarantined, *odd_inputs(loaded.table, data)]
    table = without(loaded.table, odd) if data.odd_inputs == "drop" else loaded.table
    conflicts = conflicting_examples(table) if data.conflicting_labels == "drop" else []
    return TakenOut(without(table, conflicts), odd, conflicts)


def without(table: pd.DataFrame, quarantined: list[Quarantined]) -> pd.DataFrame:
    sources = {q.source for q in quarantined}
    return table[~table["source"].isin(sources)].reset_index(drop=True)
