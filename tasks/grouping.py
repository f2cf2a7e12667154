"""Keys that put copies of one example together before the split, with no model: a group never
straddles train / validation / test, so a near-copy of a test example cannot sit in train.

Texts: the text casefolded, Unicode-normalized (NFKC), with every run of characters that are not
letters or digits turned into one space. "Sorry, I'll call later" and "sorry i'll call later!!"
are one group. Exact copies share a key too (their content hash is the same example already).
Images are grouped by their content hash (exact copies) only; near-copies of images are found
after the split by the embedding check of the leakage audit.
"""

from __future__ import annotations

import re
import unicodedata

import pandas as pd

from tasks.data import sha256_text

_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalized_text(text: str) -> str:
    return _NOT_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def group_keys(examples: pd.DataFrame, modality: str) -> pd.Series:
    """One key per row of `examples` (columns example_id, input): equal keys, one group."""
    if modality != "text":
        return examples["example_id"]
    keys = [sha256_text("text:" + normalized_text(text)) if isinstance(text, str) and normalized_text(text)
            else example_id for text, example_id in zip(examples["input"], examples["example_id"], strict=True)]
    return pd.Series(keys, index=examples.index)
