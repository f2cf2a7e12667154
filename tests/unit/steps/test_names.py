"""Prefect artifact keys and concurrency-limit names are per model and one-to-one: two registry
names never share an artifact history or a retrain/promotion limit."""

from __future__ import annotations

import re

from tasks.steps.limits import limit_name
from tasks.steps.step import artifact_key

NAMES = ["sms-spam", "sms_spam", "SMS-spam", "sms.spam", "Spam_Filter.v1", "spam-filter-v1", "digits"]


def test_names_slugging_leaves_alone_keep_their_keys():
    assert artifact_key("ants-vs-bees", "gate-decision") == "ants-vs-bees-gate-decision"
    assert limit_name("retrain", "digits") == "transferflow-retrain-digits"


def test_distinct_model_names_never_share_a_key_or_a_limit():
    for make in (lambda n: artifact_key(n, "data-report"), lambda n: limit_name("retrain", n),
                 lambda n: limit_name("promote", n)):
        made = [make(name) for name in NAMES]
        assert len(set(made)) == len(NAMES), made
        assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", key) for key in made)  # what Prefect allows
