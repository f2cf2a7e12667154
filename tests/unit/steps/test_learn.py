"""Model selection on validation: a fine-tuning stage replaces the baseline only when the
diagnosis kept it and it is strictly better on the declared metric."""

from pathlib import Path

import pytest

from tasks.config.spec import MetricSpec
from tasks.steps.refs import StageResult
from tasks.steps.select import choose_stage
from tasks.training.metrics import Contract

MACRO_F1 = MetricSpec(name="macro_f1", target=0.95)


def stage(name: str, value: float, keep: bool = True) -> StageResult:
    return StageResult(name=name, run_id=name, val_value=value, val_scores={"macro_f1": value},
                       checkpoint=Path(f"{name}.pt"), checkpoint_sha256="", history=[], notes="", keep=keep,
                       meets_target=False)


@pytest.mark.parametrize("stages,expected", [
    ([stage("baseline", 0.90), stage("finetune-1", 0.93)], "finetune-1"),          # better: chosen
    ([stage("baseline", 0.90), stage("finetune-1", 0.88)], "baseline"),            # worse: baseline kept
    ([stage("baseline", 0.90), stage("finetune-1", 0.90)], "baseline"),            # a tie keeps the simpler
    ([stage("baseline", 0.90), stage("finetune-1", 0.99, keep=False)], "baseline"),  # diagnosis dropped it
    ([stage("baseline", 0.90), stage("finetune-1", 0.95), stage("finetune-2", 0.93)], "finetune-1"),
])
def test_a_stage_is_selected_only_if_kept_and_better_than_the_best_so_far(stages, expected):
    assert choose_stage(stages, Contract(MACRO_F1)).name == expected
