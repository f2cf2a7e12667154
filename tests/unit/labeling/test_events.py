"""`emit_labels_added` without a Prefect server to deliver to: False and one line saying why, no
event handed to Prefect (which would start a throwaway local server for it), no exception. Its
delivery to a real server, and the retrain that follows, are in tests/integration/test_deployments.py."""

from __future__ import annotations

import pytest

from tasks.labeling import events
from tasks.labeling.events import LABELS_EVENT, emit_labels_added

PULL = {"model_name": "sms-spam", "config_path": "/abs/sms.yaml", "pull": "pull-0003", "corrected": 2, "added": 5,
        "source": "label-studio project 7"}


@pytest.fixture
def emitted(monkeypatch) -> list[dict]:
    """The events handed to `prefect.events.emit_event` (a stand-in that records them)."""
    import prefect.events

    calls: list[dict] = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda **event: calls.append(event) or object())
    return calls


def test_without_prefect_api_url_nothing_is_sent_and_it_says_so(emitted, capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert emit_labels_added(**PULL) is False
    said = capsys.readouterr().out
    assert "no Prefect server configured (PREFECT_API_URL is unset)" in said and f"no {LABELS_EVENT} event" in said
    assert emitted == []


def test_a_server_that_does_not_answer_gets_nothing_and_it_says_which(emitted, capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.local_server import free_port

    dead = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings(updates={PREFECT_API_URL: dead}):
        assert emit_labels_added(**PULL) is False
    said = capsys.readouterr().out
    assert f"PREFECT_API_URL={dead} does not answer (ConnectError" in said and "no retrain was triggered" in said
    assert emitted == []


def test_an_answering_server_gets_the_event_on_the_models_resource(emitted, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setattr(events, "_unreachable", lambda: None)
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert emit_labels_added(**PULL) is True
    assert emitted == [{"event": "transferflow.labels.added",
                        "resource": {"prefect.resource.id": "transferflow.model.sms-spam",
                                     "prefect.resource.name": "sms-spam"},
                        "payload": {"config_path": "/abs/sms.yaml", "pull": "pull-0003", "corrected": 2, "added": 5,
                                    "source": "label-studio project 7"}}]
