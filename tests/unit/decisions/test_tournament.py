"""The tournament's rules without models: who is eligible, who ranks first, and how the flow
moves on to the next candidate when fine-tuning finds the chosen one gains nothing."""

from types import SimpleNamespace

import pytest

from tasks.config.families import model_spec
from tasks.config.spec import CandidatesSpec, FinetuneSpec
from tasks.decisions.tournament import CandidateResult, constraint_failure, rank_candidates

A = model_spec({"family": "torchvision", "name": "mobilenet_v2"})
B = model_spec({"family": "timm", "name": "tf_efficientnet_lite0"})
C = model_spec({"family": "torchvision", "name": "resnet18", "weights": "none"})


def result(value, throughput=100.0, guard_ok=True, status="eligible", parameters=1000):
    return CandidateResult("m", parameters, 8, throughput, None, value, None, guard_ok, status, 1.0)


def test_the_guard_comes_first_then_the_metric_then_throughput_then_config_order():
    assert rank_candidates([(A, result(0.80)), (B, result(0.90)), (C, result(0.95, guard_ok=False))]) == [B, A, C]
    assert rank_candidates([(A, result(0.90, throughput=50)), (B, result(0.90, throughput=80))]) == [B, A]
    assert rank_candidates([(A, result(0.90)), (B, result(0.90))]) == [A, B]


def test_dropped_candidates_are_not_ranked():
    dropped = result(0.99, status="dropped: too slow")
    assert rank_candidates([(A, dropped), (B, result(0.5))]) == [B]
    assert rank_candidates([(A, dropped)]) == []


@pytest.mark.parametrize("parameters, throughput, limits, expected", [
    (3_000_000, 50.0, {}, None),
    (3_000_000, 50.0, {"max_params": 2_500_000}, "dropped: 3,000,000 parameters > max_params 2,500,000"),
    (2_000_000, 50.0, {"max_params": 2_500_000, "min_throughput": 60}, "dropped: 50.0 inputs/s < min_throughput 60"),
    (2_000_000, None, {"min_throughput": 60}, None),  # not measured yet: only the size can drop it
])
def test_constraints_drop_what_the_hardware_cannot_run(parameters, throughput, limits, expected):
    constraints = CandidatesSpec(candidates=[A, B], **limits)
    assert constraint_failure(parameters, throughput, constraints) == expected


class FakeStage(SimpleNamespace):
    pass


def test_stop_no_gain_moves_on_to_the_next_candidate_and_says_so(monkeypatch):
    """With stand-ins for steps 5-6: the first candidate's fine-tuning decides stop_no_gain, so the
    second gets its own (prefixed) baseline and stages; the third is never tried once the second
    locks in. Each stage maps to its own one-model config."""
    import flows.transfer_learning as flow
    from tasks.decisions.log import Decisions
    from tasks.decisions.tournament import Tournament
    from tasks.steps.refs import BaseModelRef, Prepared

    trained_models, prefixes = [], []
    monkeypatch.setattr(flow, "starting_point", lambda spec, split, tracking, tournament=False: None)
    monkeypatch.setattr(flow, "load_base_model", lambda spec: BaseModelRef(spec.model.name, 8, 2))

    def baseline(spec, dataset, split, tracking, start, contract, class_weights=False, prefix=""):
        trained_models.append(spec.model)
        prefixes.append(prefix)
        return FakeStage(name=f"{prefix}baseline")

    def unfreezing(spec, dataset, split, base, tracking, start, contract, prefix=""):
        stage = FakeStage(name=f"{prefix}finetune-1")
        log = Decisions()
        log.add(stage.name, "stop_no_gain" if spec.model == A else "lock_in", "stand-in")
        return [base, stage], log

    monkeypatch.setattr(flow, "train_baseline", baseline)
    monkeypatch.setattr(flow, "gradual_unfreezing", unfreezing)
    spec = SimpleNamespace(tournament=object(),
                           with_model=lambda model: SimpleNamespace(model=model, finetune=FinetuneSpec()))
    prepared = Prepared(None, None, None, BaseModelRef("a", 8, 2), None, Tournament([], [A, B, C]))
    stages, decisions, trained = flow.train_candidates(spec, prepared, None, None)
    assert trained_models == [A, B] and prefixes == ["", "tf_efficientnet_lite0-"]
    assert [s.name for s in stages] == ["baseline", "finetune-1", "tf_efficientnet_lite0-baseline",
                                        "tf_efficientnet_lite0-finetune-1"]
    assert [e["action"] for e in decisions.entries] == ["stop_no_gain", "next_candidate", "lock_in"]
    assert "tf_efficientnet_lite0" in decisions.entries[1]["reason"] and "2 of 3" in decisions.entries[1]["reason"]
    assert trained["baseline"][0].model == A and trained["tf_efficientnet_lite0-finetune-1"][0].model == B
    assert trained["tf_efficientnet_lite0-baseline"][1].base_model.source == "tf_efficientnet_lite0"


def test_without_a_tournament_stop_no_gain_ends_the_run(monkeypatch):
    import flows.transfer_learning as flow
    from tasks.decisions.log import Decisions
    from tasks.steps.refs import BaseModelRef, Prepared

    monkeypatch.setattr(flow, "starting_point", lambda spec, split, tracking, tournament=False: None)
    monkeypatch.setattr(flow, "train_baseline", lambda *a, prefix="", **k: FakeStage(name="baseline"))

    def unfreezing(spec, dataset, split, base, tracking, start, contract, prefix=""):
        log = Decisions()
        log.add("finetune-1", "stop_no_gain", "stand-in")
        return [base, FakeStage(name="finetune-1")], log

    monkeypatch.setattr(flow, "gradual_unfreezing", unfreezing)
    monkeypatch.setattr(flow, "run_tournament", lambda *a: pytest.fail("on_unfit: stop tries no alternative"))
    alone = model_spec({**A.model_dump(), "on_unfit": "stop"})
    spec = SimpleNamespace(tournament=None, candidates=[alone],
                           with_model=lambda model: SimpleNamespace(model=model, finetune=FinetuneSpec()))
    prepared = Prepared(None, None, None, BaseModelRef("a", 8, 2), None)
    stages, decisions, _ = flow.train_candidates(spec, prepared, None, None)
    assert [e["action"] for e in decisions.entries] == ["stop_no_gain"] and len(stages) == 2


def test_an_unfit_model_configured_alone_hands_over_to_its_offline_alternatives(monkeypatch):
    """model.on_unfit: try_candidates (the default): the configured model and its alternatives are
    probed as a tournament (stand-in ranking: pixels, the configured model, the hybrid; timm dropped);
    the alternatives are trained in the ranking's order, each unfit one handing over to the next, and
    the log names every alternative with why it is tried and its probe score or why it was dropped."""
    import flows.transfer_learning as flow
    from tasks.config.alternatives import offline_alternatives
    from tasks.decisions.log import Decisions
    from tasks.decisions.tournament import Tournament
    from tasks.steps.refs import BaseModelRef, Prepared

    alternatives = offline_alternatives(A)
    timm, hybrid, pixels = (a.model for a in alternatives)
    assert (timm.family, hybrid.family, pixels.family) == ("timm", "hybrid", "pixels")
    probed: list = []
    results = [result(0.70), result(None, status="dropped: 5.3M parameters > max_params"), result(0.72),
               result(0.81)]
    monkeypatch.setattr(flow, "run_tournament", lambda spec, *rest: probed.append(spec.candidates) or Tournament(
        results, [pixels, A, hybrid]))
    monkeypatch.setattr(flow, "starting_point", lambda spec, split, tracking, tournament=False: None)
    monkeypatch.setattr(flow, "load_base_model", lambda spec: BaseModelRef(spec.model.name, 8, 0))
    trained_models = []

    def baseline(spec, dataset, split, tracking, start, contract, class_weights=False, prefix=""):
        trained_models.append(spec.model)
        return FakeStage(name=f"{prefix}baseline")

    def unfreezing(spec, dataset, split, base, tracking, start, contract, prefix=""):
        log = Decisions()
        verdict = {A.family: "stop_no_gain", "pixels": "no_layer_groups"}.get(spec.model.family, "lock_in")
        log.add(base.name, verdict, "stand-in")
        return [base], log

    monkeypatch.setattr(flow, "train_baseline", baseline)
    monkeypatch.setattr(flow, "gradual_unfreezing", unfreezing)

    def one_model(model):
        return SimpleNamespace(model=model, finetune=FinetuneSpec(), metric=SimpleNamespace(key="accuracy"),
                               with_candidates=lambda models: SimpleNamespace(candidates=models))

    spec = SimpleNamespace(tournament=None, candidates=[A], with_model=one_model)
    prepared = Prepared(None, None, None, BaseModelRef("a", 8, 2), None)
    stages, decisions, trained = flow.train_candidates(spec, prepared, None, None)
    assert probed == [[A, timm, hybrid, pixels]]
    assert trained_models == [A, pixels, hybrid]
    assert [s.name for s in stages] == ["baseline", "pixels-baseline", "hybrid-baseline"]
    assert [e["action"] for e in decisions.entries] == ["stop_no_gain", "try_candidates", "next_candidate",
                                                        "no_layer_groups", "next_candidate", "lock_in"]
    tried = decisions.entries[1]["reason"]
    assert "dropped: 5.3M parameters > max_params" in tried and "probe accuracy 0.8100" in tried
    assert all(a.model.describe() in tried and a.why in tried for a in alternatives)
    assert "pixels" in decisions.entries[2]["reason"] and "2 of 3" in decisions.entries[2]["reason"]
    assert trained["hybrid-baseline"][0].model == hybrid


def test_a_later_stall_keeps_the_tournaments_choice(monkeypatch):
    """`stop_stalled` (a later stage stopped improving below the target) is not `stop_no_gain`:
    the chosen base model did gain over its baseline, so the next candidate is never trained."""
    import flows.transfer_learning as flow
    from tasks.decisions.log import Decisions
    from tasks.decisions.tournament import Tournament
    from tasks.steps.refs import BaseModelRef, Prepared

    trained_models = []
    monkeypatch.setattr(flow, "starting_point", lambda spec, split, tracking, tournament=False: None)

    def baseline(spec, dataset, split, tracking, start, contract, class_weights=False, prefix=""):
        trained_models.append(spec.model)
        return FakeStage(name=f"{prefix}baseline")

    def unfreezing(spec, dataset, split, base, tracking, start, contract, prefix=""):
        log = Decisions()
        log.add("finetune-1", "unfreeze_next", "stand-in")
        log.add("finetune-2", "stop_stalled", "stand-in")
        return [base, FakeStage(name="finetune-1"), FakeStage(name="finetune-2")], log

    monkeypatch.setattr(flow, "train_baseline", baseline)
    monkeypatch.setattr(flow, "gradual_unfreezing", unfreezing)
    spec = SimpleNamespace(tournament=object(),
                           with_model=lambda model: SimpleNamespace(model=model, finetune=FinetuneSpec()))
    prepared = Prepared(None, None, None, BaseModelRef("a", 8, 2), None, Tournament([], [A, B, C]))
    _, decisions, _ = flow.train_candidates(spec, prepared, None, None)
    assert trained_models == [A]
    assert [e["action"] for e in decisions.entries] == ["unfreeze_next", "stop_stalled"]
