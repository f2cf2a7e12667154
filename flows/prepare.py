"""Steps 2-4 in order, shared by the training flow and `validate`: load and audit the data, split it
before any training, and load (or choose) the base model."""

from __future__ import annotations

from tasks.config.spec import Spec
from tasks.core.errors import DataError, DataQualityError
from tasks.data.split import SplitRef
from tasks.decisions.tournament import Tournament
from tasks.steps.base_model import choose_base_model, eligible, load_base_model, measure_candidates
from tasks.steps.data import (
    check_label_quality,
    cross_check_section,
    finish_data_report,
    labels_store_section,
    load_data,
    odd_inputs_section,
)
from tasks.steps.embed import embed_examples
from tasks.steps.refs import DatasetRef, Prepared, QualitySummary, TrackingRef
from tasks.steps.resume import cached
from tasks.steps.split import audit_label_errors, check_leakage, record_split, split_before_training, split_section
from tasks.training.metrics import Contract, contract_for


def prepare(spec: Spec, tracking: TrackingRef | None, dataset: DatasetRef | None = None) -> Prepared:
    """Steps 2-4, shared by the training flow and `validate` (which tracks nothing, and loads
    every candidate instead of running their tournament). Steps 2-3 also write the data report
    (`tasks.reports.data_report`), whether they pass or a policy stops the run. `dataset`: step 2a's
    result when the caller has loaded the data already (the flow, to see whether it is new)."""
    from tasks.reports.data_report import report_folder

    dataset = dataset or load_data(spec)                        # 2. data + label quality
    folder = report_folder(spec.workdir, spec.registry.model_name, dataset.fingerprint)
    cross_check = cross_check_section(spec, dataset, folder, tracking)  # labelled twice: the agreement
    store = labels_store_section(spec, dataset)  # reviewed labels the store applied at 2a
    sections = [*([store] if store else []), odd_inputs_section(spec, dataset, folder),
                *([cross_check] if cross_check else [])]
    quality: QualitySummary | None = None
    try:
        quality = cached(check_label_quality)(spec, dataset, folder)
        sections.append(quality.section)
        if cross_check and cross_check.outcome == "fail":   # cross_check_policy: fail; first, as the likelier cause
            raise DataError(f"{cross_check.summary} Nothing was trained.")
        if not quality.passed:
            raise DataQualityError(f"{spec.data.path}: the label-quality check failed; nothing was trained.\n"
                                   f"{quality.failure}")
        first_split = split_before_training(spec, dataset)  # 3. test quarantined from here
        sections.append(split_section(first_split))
        embed_examples(spec, dataset, first_split, tracking)          # 3a. into the cache, in shards (local or Dask)
        split, audit = cached(audit_label_errors)(spec, dataset, first_split, tracking, folder)  # 3b. labels disputed
        sections.append(audit)
        split, leaks = cached(check_leakage)(spec, dataset, split, tracking, folder)  # 3c. near-copies across splits
        sections.append(leaks)
        record_split(spec, dataset, split, tracking, before_drops=first_split)
    except DataError as error:
        counts = quality.class_counts if quality else {}
        stopped = finish_data_report(spec, dataset, counts, sections, tracking, folder, stopped=str(error))
        raise type(error)(f"{error}\nData report: {stopped.path}") from None
    report = finish_data_report(spec, dataset, quality.class_counts, sections, tracking, folder)
    contract = contract_for(spec.metric, list(dataset.train_val_examples(split)["train"]["label"]))  # metric + guard
    if spec.tournament is None or tracking is None:             # 4. pretrained, offline
        models = [cached(load_base_model)(spec.with_model(model)) for model in spec.candidates]
        return Prepared(dataset, quality, split, models[0], contract, report=report)
    tournament = run_tournament(spec, dataset, split, tracking, contract)
    return Prepared(dataset, quality, split, cached(load_base_model)(spec.with_model(tournament.chosen)), contract,
                    tournament, report)


def run_tournament(spec: Spec, dataset: DatasetRef, split: SplitRef, tracking: TrackingRef,
                   contract: Contract) -> Tournament:
    """Step 4 with several candidates (a tournament's, or `model.on_unfit`'s): each measured alone,
    the eligible ones embedded (train and validation), probed and ranked on validation."""
    measured = cached(measure_candidates)(spec, dataset, split)              # each alone on the machine
    for candidate in eligible(measured):
        if candidate and not spec.candidates[candidate].FITS_ON_TRAIN:  # the first is embedded (3a); a classic or
            # hybrid one fits its own features at its probe
            embed_examples(spec, dataset, split, tracking, candidate)         # train + val, in shards
    return choose_base_model(spec, dataset, split, tracking, contract, measured)
