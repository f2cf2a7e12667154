"""The event a labels pull announces: `transferflow.labels.added` on resource
`transferflow.model.<name>`, which the retrain deployment of that model is triggered by
(flows/serve.py `labels_trigger`, deployments/prefect.yaml), as it is by a drift event.

Triggers live on a Prefect server, so the event is only worth sending to the one at
PREFECT_API_URL: without it Prefect would start a throwaway local server (~10 s) that no deployment
listens to, and a server that does not answer only logs a warning from a background thread. Both
cases return False with one line saying why, so `label pull` reports rather than crashes: the
labels are already in the store by then.
"""

from __future__ import annotations

LABELS_EVENT = "transferflow.labels.added"
HEALTH_TIMEOUT_S = 5.0  # one GET /health: Prefect's own request timeout is a minute


def emit_labels_added(model_name: str, config_path: str, pull: str, corrected: int, added: int,
                      source: str) -> bool:
    """Emit LABELS_EVENT for `model_name` after a pull changed the labels store; `pull` names the
    pull, `corrected` and `added` count its changed and new labels, `source` is where they came
    from (the Label Studio project or CSV). True when the event was handed to the configured
    server's events client (delivered in the background, and at the latest when the process exits);
    False, after printing why, when no server is configured or it does not answer."""
    from prefect.events import emit_event
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    if not api_url:
        print(f"no Prefect server configured (PREFECT_API_URL is unset): no {LABELS_EVENT} event sent, so no "
              "retrain was triggered; set it to the server `transferflow serve` uses, or run `transferflow run`")
        return False
    unreachable = _unreachable()
    if unreachable:
        print(f"PREFECT_API_URL={api_url} does not answer ({unreachable}): no {LABELS_EVENT} event sent, "
              "so no retrain was triggered")
        return False
    event = emit_event(event=LABELS_EVENT,
                       resource={"prefect.resource.id": f"transferflow.model.{model_name}",
                                 "prefect.resource.name": model_name},
                       payload={"config_path": config_path, "pull": pull, "corrected": corrected, "added": added,
                                "source": source})
    return event is not None


def _unreachable() -> str | None:
    """Why the Prefect API does not answer GET /health, or None when it does."""
    from prefect import get_client

    with get_client(sync_client=True, httpx_settings={"timeout": HEALTH_TIMEOUT_S}) as client:
        error = client.api_healthcheck()
    return f"{error.__class__.__name__}: {error}" if error else None
