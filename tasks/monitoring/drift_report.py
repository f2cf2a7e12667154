"""What a drift check found, as numbers (`DriftReport`, the flow's result and the CLI's JSON), as
markdown (MLflow and the Prefect UI) and as one picture (the test's null distribution, the class
mix and the input statistics)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tasks.core.numbers import significant


@dataclass(frozen=True)
class StatisticShift:
    reference_mean: float
    reference_sd: float
    incoming_mean: float

    @property
    def shift_in_sd(self) -> float | None:
        """How far the incoming mean moved, in reference standard deviations (None when constant)."""
        return (self.incoming_mean - self.reference_mean) / self.reference_sd if self.reference_sd > 0 else None


def statistic_shifts(reference: dict[str, list[float]], incoming: dict[str, list[float]]) -> dict[str, StatisticShift]:
    return {name: StatisticShift(float(np.mean(reference[name])), float(np.std(reference[name])),
                                 float(np.mean(values)))
            for name, values in incoming.items() if name in reference and values and reference[name]}


@dataclass(frozen=True)
class DriftReport:
    """The decision rests on the MMD test alone (one test keeps false alarms at alpha); the class mix
    and the input statistics say what moved."""

    model_name: str
    champion_version: str
    source: str                  # the incoming batch as given
    drift: bool
    p_value: float
    score: float                 # unbiased MMD^2 between reference and incoming embeddings
    alpha: float
    n: int                       # incoming inputs
    n_tested: int                # of them in the test (all, up to tasks.monitoring.drift.MAX_TESTED)
    reference_n: int
    permutations: int
    bandwidth: float
    class_mix_reference: dict[str, float]
    class_mix_incoming: dict[str, float]
    class_mix_shift: float       # total variation distance between the two mixes
    statistics: dict[str, StatisticShift]
    null_scores: tuple[float, ...] = field(repr=False, default=())
    stored_batch: str | None = None
    mlflow_run_id: str | None = None
    batch_digest: str = ""               # the batch's content (tasks.monitoring.kept_batches.batch_digest)
    already_checked: str | None = None   # a repeat: the MLflow run of the first check, whose verdict this is

    @staticmethod
    def from_json(data: dict[str, Any]) -> DriftReport:
        """The report `as_json` wrote (a check's drift_report.json)."""
        known = {name: data[name] for name in DriftReport.__dataclass_fields__ if name in data}
        known["statistics"] = {name: StatisticShift(s["reference_mean"], s["reference_sd"], s["incoming_mean"])
                               for name, s in data.get("statistics", {}).items()}
        return DriftReport(**known)

    @property
    def verdict(self) -> str:
        return "DRIFT" if self.drift else "no drift"

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("null_scores")
        data["statistics"] = {name: {**asdict(s), "shift_in_sd": s.shift_in_sd} for name, s in self.statistics.items()}
        return data

    def summary(self) -> str:
        if self.already_checked:
            kept = f"; kept in {self.stored_batch}" if self.stored_batch else ""
            return (f"already checked: this batch (content {self.batch_digest[:12]}) was checked against version "
                    f"{self.champion_version} in MLflow run {self.already_checked}, verdict {self.verdict} (p-value "
                    f"{self.p_value:.4f}){kept}; not tested, copied or evented again")
        return (f"{self.verdict}: MMD^2 {self.score:.4g}, p-value {self.p_value:.4f} (alpha {self.alpha:g}) on "
                f"{self.n} incoming input(s) vs {self.reference_n} reference examples of {self.model_name} "
                f"version {self.champion_version}; predicted class mix moved {self.class_mix_shift:.1%}")


def render_markdown(report: DriftReport) -> str:
    lines = [f"# Drift check: {report.model_name} version {report.champion_version}: **{report.verdict}**", "",
             report.summary() + ".", "",
             "| | value |", "| --- | ---: |",
             f"| incoming inputs | {report.n} ({report.n_tested} tested) |",
             f"| reference (examples it never trained on) | {report.reference_n} |",
             f"| MMD^2 (unbiased, Gaussian kernel, sigma {significant(report.bandwidth)}) | "
             f"{significant(report.score)} |",
             f"| p-value ({report.permutations} permutations) | {significant(report.p_value)} |",
             f"| alpha (drift.alpha) | {report.alpha:g} |", "",
             "## Predicted class mix", "", "| class | reference | incoming |", "| --- | ---: | ---: |"]
    for label, share in report.class_mix_reference.items():
        lines.append(f"| {label} | {share:.1%} | {report.class_mix_incoming.get(label, 0.0):.1%} |")
    lines += ["", f"Total variation distance: {report.class_mix_shift:.1%}.", "",
              "## Input statistics", "", "| statistic | reference mean (sd) | incoming mean | shift (sd) |",
              "| --- | ---: | ---: | ---: |"]
    for name, s in report.statistics.items():
        shift = f"{s.shift_in_sd:+.2f}" if s.shift_in_sd is not None else "n/a"
        lines.append(f"| {name} | {significant(s.reference_mean)} ({significant(s.reference_sd)}) | "
                     f"{significant(s.incoming_mean)} | {shift} |")
    if report.stored_batch:
        lines += ["", f"The incoming batch is stored at `{report.stored_batch}` with a manifest: label it and add "
                      "it to the data, then retrain."]
    return "\n".join(lines) + "\n"


def drift_figure(report: DriftReport) -> Any:
    """Left: where the observed MMD^2 falls in the permutation null. Right: the class mix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (null_axes, mix_axes) = plt.subplots(1, 2, figsize=(10, 4))
    null_axes.hist(report.null_scores, bins=30, color="grey", label="permuted (no drift)")
    null_axes.axvline(report.score, color="red", label=f"observed, p = {report.p_value:.3f}")
    null_axes.set_title("MMD^2: observed vs permutation null")
    null_axes.legend(fontsize=8)
    labels = list(report.class_mix_reference)
    positions = np.arange(len(labels))
    mix_axes.bar(positions - 0.2, [report.class_mix_reference[k] for k in labels], 0.4, label="reference")
    mix_axes.bar(positions + 0.2, [report.class_mix_incoming.get(k, 0.0) for k in labels], 0.4, label="incoming")
    mix_axes.set_xticks(positions, labels, rotation=45, ha="right")
    mix_axes.set_title("predicted class mix")
    mix_axes.legend(fontsize=8)
    return figure
