"""The decision log says what was done (a stage ended by `finetune.max_stages` reads
`stop_max_stages`), and its markdown stays narrow: a short table, then each reason with its
numbers one per line at 3 significant digits."""

from tasks.decisions.diagnose import StageDecision, capped_by_max_stages
from tasks.decisions.log import decisions_markdown

ASKED = StageDecision("unfreeze_next", "train and validation improve together: unfreeze the next layer group(s)",
                      {"best_val_metric": 0.9652173913, "best_epoch": 3.0, "target": 0.95})


def test_a_decision_capped_by_max_stages_reads_stop_max_stages_and_keeps_what_the_curves_said():
    capped = capped_by_max_stages(ASKED, 2)
    assert capped.action == "stop_max_stages"
    assert capped.reason == ("finetune.max_stages (2) is reached, so fine-tuning stops here; the curves alone said "
                             "`unfreeze_next`: " + ASKED.reason)
    assert capped.numbers == {**ASKED.numbers, "max_stages": 2.0}
    weighted = capped_by_max_stages(StageDecision("class_weights_on", "lagging class(es): b", {}), 1)
    assert weighted.reason.endswith("the baseline head is still re-fit with the class-weighted loss")


def test_the_markdown_is_a_short_table_then_each_reason_with_one_number_per_line():
    entries = [{"stage": "finetune-1", "action": "unfreeze_next", "reason": "better | still below",
                "numbers": {"best_val_metric": 0.91234, "best_before": 0.85, "train_loss_last": 0.1}},
               {"stage": "finetune-2", "action": "stop_max_stages", "reason": capped_by_max_stages(ASKED, 2).reason,
                "numbers": capped_by_max_stages(ASKED, 2).numbers}]
    markdown = decisions_markdown(entries, "macro_f1", "finetune-2")
    lines = markdown.splitlines()
    table = lines[lines.index("| stage | action | validation macro_f1 |"):][:4]
    assert table[2:] == ["| finetune-1 | `unfreeze_next` | 0.912 |", "| finetune-2 | `stop_max_stages` | 0.965 |"]
    assert all(line.count("|") == 4 for line in table)  # no reason or numbers inside the table
    second = lines[lines.index("## finetune-2: `stop_max_stages`"):]
    assert [line for line in second if line.startswith("- ")] == ["- best_val_metric: 0.965", "- best_epoch: 3",
                                                                  "- max_stages: 2"]
    assert "- best_before: 0.85" in lines and "train_loss_last" not in markdown  # only the driving numbers
    assert "Selected on validation: **finetune-2**" in markdown
