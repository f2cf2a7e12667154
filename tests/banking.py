"""Five banking77 intents: the real texts the label-audit and leakage-check tests run step 3 on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

INTENTS = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "pin_blocked", "top_up_failed"]


def split_intents_csv(path: Path, folder: Path, **data_fields: Any) -> tuple[Any, Any, Any, Any]:
    """Steps 2-3 on a CSV of those intents, as the flow runs them before its audits: the config
    (MiniLM, 32 tokens, the given `data_fields`), the saved dataset, its split and its table."""
    from tasks.config.spec import Spec
    from tasks.core.hashing import fingerprint
    from tasks.data.readers import load_examples
    from tasks.data.split import split_examples
    from tasks.data.table import save_table
    from tasks.steps.refs import DatasetRef

    spec = Spec.model_validate({
        "task": "banking intents", "metric": {"name": "macro_f1", "target": 0.8},
        "data": {"kind": "csv_text", "path": path, **data_fields},
        "model": {"family": "hf_text", "name": "all-MiniLM-L6-v2", "max_tokens": 32},
        "registry": {"model_name": "intents"}, "workdir": folder / "work"})
    table = load_examples(spec.data).table
    digest = fingerprint(table["example_id"], table["label"])
    dataset = DatasetRef(save_table(table, spec.workdir, digest), digest, tuple(INTENTS), None, ())
    split = split_examples(table, spec.split, digest, spec.workdir / "splits" / "intents", "text")
    return spec, dataset, split, table
