"""Recipe step 5, before the baseline: the classic anchor, on the same split as every candidate.

Trained on train, scored on validation, never on test. It takes seconds, and it is the score a
transferred model must beat to be worth its cost (`tasks.decisions.anchor`).
"""

from __future__ import annotations

import time

from tasks.config.spec import Spec
from tasks.data.split import SplitRef
from tasks.decisions.anchor import ClassicAnchor
from tasks.steps.refs import DatasetRef, TrackingRef
from tasks.steps.step import step
from tasks.training.metrics import Contract

ANCHOR_STAGE = "classic-anchor"  # its name in the decision log


@step("5 classic anchor")
def classic_anchor(spec: Spec, dataset: DatasetRef, split: SplitRef, tracking: TrackingRef,
                   contract: Contract) -> ClassicAnchor:
    """The modality's classic family (a tournament's classic candidate's options where one is
    listed), fitted on train, its logistic regression's C chosen on validation. Logged on the
    flow's MLflow run as `classic_val_metric`, with the anchor's other validation scores."""
    from tasks.config.families import classic_model
    from tasks.models.backbones import load_backbone
    from tasks.registry.tracking import log_params, log_scores
    from tasks.training.linear_head import probe_classic

    started = time.perf_counter()
    model = next((m for m in spec.candidates if m.CLASSIC), classic_model(spec.modality))
    backbone = load_backbone(model)
    fit, _, _ = probe_classic(backbone, dataset.train_val_examples(split), list(dataset.classes), contract,
                              spec.workdir, spec.train.seed)
    scores = fit.result.best.val_scores
    anchor = ClassicAnchor(model.describe(), contract.value(scores), scores, fit.C, backbone.dim,
                           time.perf_counter() - started)
    client = tracking.client
    client.log_metric(tracking.run_id, "classic_val_metric", anchor.val_value)
    log_scores(client, tracking.run_id, scores, prefix="classic_val_")
    log_params(client, tracking.run_id, {"classic_anchor": model.describe(), "classic_anchor_C": fit.C,
                                         "classic_anchor_features": backbone.dim})
    print(f"Classic anchor: {anchor.describe(spec.metric.key)} ({anchor.seconds:.1f} s)")
    return anchor
