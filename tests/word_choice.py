"""A text task where word choice decides: support tickets routed to the team that owns the product
line their reference code names. The questions are real banking77 texts, drawn independently of
the label; only the code's letters (XK, KX, XQ, QX, KQ, QK: two of three letters, in either
order) tell the
classes apart. A sentence embedding hears "a banking question with a reference" in all six; a
bag of character n-grams reads the code."""

from __future__ import annotations

import csv
import random
from pathlib import Path

PRODUCT_LINES = ("XK", "KX", "XQ", "QX", "KQ", "QK")


def word_choice_csv(banking77_train: Path, destination: Path, per_line: int, seed: int = 0) -> Path:
    """`per_line` tickets per product line, as a csv_text file (text, label)."""
    with banking77_train.open(newline="", encoding="utf-8") as handle:
        questions = sorted({row["text"] for row in csv.DictReader(handle)})
    rng = random.Random(seed)
    picked = rng.sample(questions, per_line * len(PRODUCT_LINES))
    with destination.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for index, question in enumerate(picked):
            line = PRODUCT_LINES[index % len(PRODUCT_LINES)]
            writer.writerow([f"{question} [ref {line}-{rng.randint(1000, 9999)}]", line.lower()])
    return destination
