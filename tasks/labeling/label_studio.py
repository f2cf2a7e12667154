"""A review queue in Label Studio, and its answers brought back: `transferflow label push / pull / status`.

One project per model and queue (`<model> suspects`, `<model> incoming`), found again by its title,
so a second push adds only the examples the project lacks. The project's labelling config lists the
model's classes; its instructions are the guideline. Images and sounds are uploaded through Label
Studio's import API, so Label Studio itself serves them to its users (no file server of ours);
texts go inline. Sighted items carry the champion's prediction as a pre-annotation; blind ones
(tasks.labeling.queues) never do.

Everything goes through the official `label-studio-sdk`, except two calls its 2.0 release lacks a
typed method for (a multipart file upload, and fetching an uploaded file back), made with httpx and
the sdk's own auth header. Server behaviour these rely on is measured in docs/label-studio-notes.md.
"""

from __future__ import annotations

import html
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.errors import TransferflowError
from tasks.core.hashing import sha256_file
from tasks.labeling.queues import QUEUES, Queue, QueueItem, QueueName

URL_VARIABLE, KEY_VARIABLE = "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"
MEDIA = {"image": ("Image", "image"), "text": ("Text", "text"), "audio": ("Audio", "audio")}
IMPORT_CHUNK = 200   # tasks per import request
UPLOAD_CHUNK = 20    # files per multipart upload
TITLE_LIMIT = 50     # Label Studio's project title length


class LabelStudioError(TransferflowError):
    """The server cannot be reached, refuses the key, or lacks what a pull needs."""


@dataclass(frozen=True)
class PushResult:
    project_id: int
    url: str
    added: int
    already: int
    pre_annotated: int
    blind: int


@dataclass(frozen=True)
class QueueStatus:
    queue: QueueName
    project_id: int
    url: str
    tasks: int
    answered: int
    skipped: int


@dataclass(frozen=True)
class ServerAnswer:
    """A person's latest answer to one task, as read from the server."""

    queue: QueueName
    project_id: int
    task_id: int
    example_id: str
    label: str
    who: str
    media_url: str | None  # a file's Label Studio URL (new examples are fetched from it)
    text: str | None


class Studio:
    """A connection to one Label Studio server, checked when made."""

    def __init__(self, url: str | None = None, api_key: str | None = None) -> None:
        from label_studio_sdk.client import LabelStudio

        self.url = (url or os.environ.get(URL_VARIABLE) or "").rstrip("/")
        key = api_key or os.environ.get(KEY_VARIABLE) or ""
        if not self.url or not key:
            raise LabelStudioError(f"{URL_VARIABLE} and {KEY_VARIABLE} must both be set (the server, and your access "
                                   "token from Label Studio's Account & Settings page). Fix: export them, or use "
                                   "`transferflow label export` for the plain-file path.")
        # Any: the sdk's generated types mark every field optional; the server's answers are checked here.
        self.client: Any = LabelStudio(base_url=self.url, api_key=key, timeout=60)
        try:
            self.client.users.whoami()
        except Exception as error:  # the sdk raises httpx errors and its own ApiError
            raise LabelStudioError(f"{URL_VARIABLE}={self.url}: Label Studio does not answer with this key "
                                   f"({_short(error)}). Fix: start the server, or check the URL and "
                                   f"{KEY_VARIABLE}.") from None

    def headers(self) -> dict[str, str]:
        """The sdk's auth header (it trades a personal access token for an access token itself)."""
        return dict(self.client._client_wrapper.get_headers())  # private: no public accessor in 2.0

    def find_project(self, model_name: str, queue: QueueName) -> Any | None:
        title = project_title(model_name, queue)
        return next((p for p in self.client.projects.list(title=title) if p.title == title), None)

    def project_url(self, project_id: int) -> str:
        return f"{self.url}/projects/{project_id}/data"


@contextmanager
def server_errors(studio: Studio) -> Iterator[None]:
    """An error answer or a dropped connection as one line naming the server, not a traceback."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        yield
    except ApiError as error:
        raise LabelStudioError(f"{studio.url}: Label Studio answered {error.status_code}: {str(error.body)[:300]}. "
                               "Fix: check the server's log, then run the command again (a pull applies all or "
                               "nothing).") from None
    except httpx.HTTPError as error:
        raise LabelStudioError(f"{studio.url}: Label Studio stopped answering ({_short(error)}). Fix: check the "
                               "server and run the command again (a push adds only what is missing).") from None


def project_title(model_name: str, queue: QueueName) -> str:
    return f"{model_name[:TITLE_LIMIT - len(queue) - 1]} {queue}"


def labelling_config(modality: str, classes: Sequence[str]) -> str:
    """One choice among the classes, beside the input and a line of what the tool knows (`$hint`)."""
    tag, variable = MEDIA[modality]
    choices = "".join(f'<Choice value="{html.escape(name, quote=True)}"/>' for name in classes)
    return (f'<View><Header value="$hint" size="6"/><{tag} name="input" value="${variable}"/>'
            f'<Choices name="label" toName="input" choice="single" showInline="true" required="true">'
            f"{choices}</Choices></View>")


def guideline_html(guideline: Path | None) -> str:
    """The guideline as the project's instructions (rendered from markdown)."""
    import markdown

    if guideline is None:
        return "<p>No labelling guideline is set for this model (data.guideline in its config).</p>"
    return str(markdown.markdown(guideline.read_text(encoding="utf-8")))


def push(studio: Studio, model_name: str, queue: Queue, classes: Sequence[str], guideline: Path | None,
         champion_version: str | None) -> PushResult:
    """Create or update the queue's project and add the items it lacks."""
    config, instructions = labelling_config(queue.modality, classes), guideline_html(guideline)
    project = studio.find_project(model_name, queue.name)
    description = f"transferflow: the {queue.name} queue of model {model_name}, from {queue.source}"
    if project is None:
        project = studio.client.projects.create(title=project_title(model_name, queue.name), label_config=config,
                                                expert_instruction=instructions, show_instruction=True,
                                                description=description)
    else:
        studio.client.projects.update(project.id, label_config=config, expert_instruction=instructions,
                                      show_instruction=True, description=description)
    model_version = f"champion-v{champion_version}" if champion_version else None
    present = {task.data.get("example_id") for task in studio.client.tasks.list(project=project.id, fields="all")}
    new = [item for item in queue.items if item.example_id not in present]
    media = _upload(studio, project.id, new) if queue.modality != "text" else {}
    tasks = [_task(item, queue, media, model_version) for item in new]
    for start in range(0, len(tasks), IMPORT_CHUNK):
        studio.client.projects.import_tasks(project.id, request=tasks[start:start + IMPORT_CHUNK])
    if any("predictions" in task for task in tasks):
        # Labellers see only the predictions of the project's model_version, which can name only a
        # version some predictions carry: so it is set after the import.
        studio.client.projects.update(project.id, model_version=model_version)
    return PushResult(project.id, studio.project_url(project.id), len(new), len(queue.items) - len(new),
                      sum("predictions" in task for task in tasks), sum(item.blind for item in new))


def answers(studio: Studio, model_name: str) -> list[ServerAnswer]:
    """Each answered task's latest answer (skipped tasks left out), across the model's queues."""
    found: list[ServerAnswer] = []
    emails: dict[int, str] = {}
    for queue in QUEUES:
        project = studio.find_project(model_name, queue)
        if project is None:
            continue
        _, variable = MEDIA[_modality(project.label_config)]
        for task in studio.client.tasks.list(project=project.id, fields="all"):
            done = [a for a in (task.annotations or []) if not _get(a, "was_cancelled")]
            if not done:
                continue
            latest = max(done, key=lambda a: (str(_get(a, "updated_at")), int(_get(a, "id"))))
            label = next((r["value"]["choices"][0] for r in _get(latest, "result") or []
                          if r.get("from_name") == "label" and r.get("value", {}).get("choices")), None)
            if label is None:
                continue
            user = int(_get(latest, "completed_by") or 0)
            if user not in emails:
                emails[user] = str(studio.client.users.get(user).email) if user else "unknown"
            value = task.data.get(variable)
            found.append(ServerAnswer(queue, project.id, int(task.id), str(task.data["example_id"]), str(label),
                                      emails[user], value if variable != "text" else None,
                                      value if variable == "text" else None))
    return found


@contextmanager
def fetched_files(studio: Studio, wanted: Sequence[ServerAnswer]) -> Iterator[dict[str, Path]]:
    """The uploaded files of these answers, fetched into a temporary folder (removed afterwards),
    by example id; a file whose bytes are not the id's is refused."""
    import httpx

    with tempfile.TemporaryDirectory(prefix="transferflow-pull-") as folder:
        paths: dict[str, Path] = {}
        for answer in wanted:
            if not answer.media_url:
                continue
            response = httpx.get(f"{studio.url}{answer.media_url}", headers=studio.headers(), timeout=60)
            if response.status_code != 200:
                raise LabelStudioError(f"{studio.url}{answer.media_url}: answered {response.status_code}. Fix: check "
                                       f"that project {answer.project_id} still holds task {answer.task_id}'s file.")
            path = Path(folder) / f"{answer.example_id[:16]}{Path(answer.media_url).suffix.lower()}"
            path.write_bytes(response.content)
            if sha256_file(path) != answer.example_id:
                raise LabelStudioError(f"{studio.url}{answer.media_url}: the file is not the one pushed for task "
                                       f"{answer.task_id}. Fix: push the queue again.")
            paths[answer.example_id] = path
        yield paths


def status(studio: Studio, model_name: str) -> list[QueueStatus]:
    """Each of the model's queues on the server: tasks, answered, skipped."""
    rows = []
    for queue in QUEUES:
        found = studio.find_project(model_name, queue)
        if found is not None:
            project = studio.client.projects.get(found.id)
            rows.append(QueueStatus(queue, project.id, studio.project_url(project.id), int(project.task_number or 0),
                                    int(project.num_tasks_with_annotations or 0),
                                    int(project.skipped_annotations_number or 0)))
    return rows


def _task(item: QueueItem, queue: Queue, media: dict[str, str], model_version: str | None) -> dict[str, Any]:
    _, variable = MEDIA[queue.modality]
    suggestion, score = item.shown_suggestion
    data = {variable: media.get(item.example_id, item.input), "example_id": item.example_id,
            "current_label": item.current_label, "suggestion": suggestion,
            "score": "" if score is None else f"{score:.3g}", "hint": _hint(item, queue.name)}
    task: dict[str, Any] = {"data": data}
    if model_version and item.prediction and not item.blind:
        task["predictions"] = [{"model_version": model_version, "score": item.confidence,
                                "result": [{"from_name": "label", "to_name": "input", "type": "choices",
                                            "value": {"choices": [item.prediction]}}]}]
    return task


def _hint(item: QueueItem, queue: QueueName) -> str:
    if queue == "cross-check":
        return "A second opinion: choose the class by the guideline (the first label is not shown)."
    if not item.current_label:
        return "A new example: choose its class."
    shown = item.shown_suggestion[0]
    suggestion = f"; the label audit suggests '{shown}'" if shown else ""
    return f"Labelled '{item.current_label}'{suggestion}. Confirm or correct."


def _upload(studio: Studio, project_id: int, items: Sequence[QueueItem]) -> dict[str, str]:
    """Upload the items' files (not as tasks); their Label Studio URLs by example id."""
    import httpx

    urls: dict[str, str] = {}
    for start in range(0, len(items), UPLOAD_CHUNK):
        chunk = items[start:start + UPLOAD_CHUNK]
        # One form field per file: the server keeps one file per field name.
        files = [(f"file{index}", (f"{item.example_id[:16]}{Path(item.input).suffix.lower()}",
                                   Path(item.input).read_bytes())) for index, item in enumerate(chunk)]
        response = httpx.post(f"{studio.url}/api/projects/{project_id}/import", params={"commit_to_project": "false"},
                              files=files, headers=studio.headers(), timeout=300)
        if response.status_code != 201:
            raise LabelStudioError(f"{studio.url}: uploading {len(chunk)} file(s) to project {project_id} answered "
                                   f"{response.status_code}: {response.text[:200]}. Fix: check the server's upload "
                                   "size limit (DATA_UPLOAD_MAX_MEMORY_SIZE).")
        by_prefix = {item.example_id[:16]: item.example_id for item in chunk}
        for upload_id in response.json()["file_upload_ids"]:
            stored = httpx.get(f"{studio.url}/api/import/file-upload/{upload_id}", headers=studio.headers(),
                               timeout=60).json()["file"]
            prefix = Path(stored).stem.rsplit("-", 1)[-1]  # upload/<project>/<random>-<our name>
            if prefix in by_prefix:
                urls[by_prefix[prefix]] = f"/data/{stored}"
    missing = [item.example_id for item in items if item.example_id not in urls]
    if missing:
        raise LabelStudioError(f"{studio.url}: {len(missing)} uploaded file(s) of project {project_id} could not be "
                               "found again. Fix: push again.")
    return urls


def _modality(label_config: str) -> str:
    return next((modality for modality, (tag, _) in MEDIA.items() if f"<{tag} " in label_config), "text")


def _get(annotation: Any, field: str) -> Any:
    """A field of an annotation, which the sdk gives as a dict or an object."""
    return annotation.get(field) if isinstance(annotation, dict) else getattr(annotation, field, None)


def _short(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:160]
