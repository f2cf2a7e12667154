"""`transferflow init`'s starter labelling guideline: one section per class, each asking what counts,
its edge cases and what does not count, with TODOs for the team to replace.

Inconsistent labels are invisible in the metrics until the model behaves erratically, and the cheapest
fix is a page that settles each class before anyone labels. The file sits beside the config, which
names it in `data.guideline`, so its sha256 travels with every run and the model card.
"""

from __future__ import annotations

from collections.abc import Sequence

GUIDELINE_FILE = "labeling.md"


def starter_guideline(task: str, classes: Sequence[str]) -> str:
    """The guideline's markdown: a short preamble, then a section per class."""
    lines = [f"# Labelling guideline: {task.strip()}", "",
             "What each class means, so that two people give the same example the same label. transferflow",
             "logs this file's sha256 with every run and names it on the model card, which says when it",
             "changed since the champion was trained. Replace every TODO and keep it to a page; when two",
             "labellers disagree (quality/disagreements.csv), settle it here with the example.", ""]
    for label in classes:
        lines += [f"## {label}", "",
                  "### What counts", "",
                  f"- TODO: what makes an example `{label}`, in a sentence or two.", "",
                  "### Edge cases", "",
                  "- TODO: the borderline examples and the label each gets (name a file or quote a text).", "",
                  "### What does not count", "",
                  f"- TODO: what looks like `{label}` but is labelled otherwise, and as what.", ""]
    return "\n".join(lines)
