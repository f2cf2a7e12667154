"""Inputs no model should learn from, and examples whose label the data contradicts, taken out
before the split with their reason: never silently skipped, always in the report and the summary.

Odd inputs: what the check of the data's modality (`tasks.data.input_checks`, chosen by the kind's
MODALITY, so `audio_folder` and `csv_audio` judge a clip alike) says of one input (zero-byte,
undecodable, tiny or constant images; undecodable, too short, silent or clipped sound files;
missing, empty or non-UTF-8 texts), what the loader could not read as an example (unsupported
formats), and one file's content under many names (a placeholder such as "image not found",
whatever its format). `data.odd_inputs: drop` (default) quarantines them; `fail` keeps them in
the table so the label-quality check stops the run listing them.
Conflicting labels: `data.conflicting_labels: drop` removes every copy of an example that appears
under two labels; `fail` (default) leaves them for the check, which stops the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from tasks.config.spec import DataSpec
from tasks.data.input_checks import input_check
from tasks.data.table import Quarantined

if TYPE_CHECKING:
    from tasks.data.table import LoadedData

PLACEHOLDER_COPIES = 3  # the same file content under this many names is a placeholder, not data


def odd_inputs(table: pd.DataFrame, data: DataSpec) -> list[Quarantined]:
    """Every row of the table that is no fit example, with its reason (one decode per input). Copies
    count by distinct names: a CSV listing one file on two rows is a duplicate, not a placeholder."""
    check = input_check(data)
    found = []
    copies = table.groupby("example_id")["input"].transform("nunique")
    for row, count in zip(table.itertuples(index=False), copies, strict=True):
        reason = check.reason(row.input)
        if reason is None and count >= PLACEHOLDER_COPIES and check.file_noun is not None:
            reason = f"placeholder: the same {check.file_noun} under {count} names"
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
