"""Read a fine-tuning stage's validation curves and turn them into a decision with its reasons.

The declared metric decides; the losses explain. The fine-tuning issue extends the actions
(regularize, weighted loss, unfreeze further); this module already names what it sees.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.metrics import is_improvement
from tasks.spec import MetricSpec, class_metric_key
from tasks.train import FitResult

LAGGING_CLASS_GAP = 0.15  # a class's recall this far below the mean recall is called lagging


@dataclass(frozen=True)
class Diagnosis:
    keep_stage: bool
    findings: tuple[str, ...]

    def text(self) -> str:
        return "; ".join(self.findings)


def diagnose_stage(stage: FitResult, baseline_value: float, metric: MetricSpec, classes: list[str]) -> Diagnosis:
    history = stage.history
    findings = [f"best validation {metric.key} {stage.best_val_metric:.4f} at epoch {stage.best_epoch} "
                f"of {len(history)} (baseline {baseline_value:.4f})"]
    after_best = history[stage.best_epoch:]
    if after_best and after_best[-1].val_loss > history[stage.best_epoch - 1].val_loss \
            and after_best[-1].train_loss < history[stage.best_epoch - 1].train_loss:
        findings.append(f"overfitting after epoch {stage.best_epoch}: train loss fell while validation "
                        "loss rose; the best epoch's weights were kept")
    if stage.stopped_early:
        findings.append(f"stopped early after {len(history)} epoch(s) without validation gain")
    keep = is_improvement(stage.best_val_metric, baseline_value, metric)
    if not keep:
        findings.append("no gain over the frozen baseline: the base model may be unfit for this data "
                        "or need deeper unfreezing; the baseline is kept")
    best = history[stage.best_epoch - 1].val_scores
    recalls = {c: best[class_metric_key("recall", c)] for c in classes}
    mean_recall = sum(recalls.values()) / len(recalls)
    lagging = [f"{c} ({r:.2f})" for c, r in recalls.items() if r < mean_recall - LAGGING_CLASS_GAP]
    if lagging:
        findings.append(f"lagging class(es) by validation recall: {', '.join(lagging)} "
                        f"(mean {mean_recall:.2f}); a class-weighted loss is the next remedy")
    return Diagnosis(keep, tuple(findings))
