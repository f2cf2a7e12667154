"""The plumbing `transferflow label push/pull` stands on, against a real Label Studio server: a project
whose config lists the classes and whose instructions are the guideline, an image uploaded through
Label Studio's own import API (it serves the file; no file server of ours), a text inline, the
champion's prediction as a pre-annotation, a person's answer posted over HTTP as the UI does, and
that answer read back through `label-studio-sdk`."""

from __future__ import annotations

import io

import httpx
import pytest

pytestmark = pytest.mark.integration

GUIDELINE = ("<h2>ant</h2><p>Any ant, winged or not, even when only part of it is in view.</p>"
             "<h2>bee</h2><p>Bees and wasps. A hoverfly is not a bee: when unsure, skip.</p>")


def image_config(classes: list[str]) -> str:
    choices = "".join(f'<Choice value="{name}"/>' for name in classes)
    return (f'<View><Image name="image" value="$image"/>'
            f'<Choices name="label" toName="image" choice="single" showInline="true">{choices}</Choices></View>')


def text_config(classes: list[str]) -> str:
    choices = "".join(f'<Choice value="{name}"/>' for name in classes)
    return (f'<View><Text name="text" value="$text"/>'
            f'<Choices name="label" toName="text" choice="single" showInline="true">{choices}</Choices></View>')


def choice(to_name: str, label: str) -> list[dict]:
    """One Choices answer in Label Studio's result format (the same shape for predictions)."""
    return [{"from_name": "label", "to_name": to_name, "type": "choices", "value": {"choices": [label]}}]


def png_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (180, 120, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_project_takes_uploads_and_texts_and_gives_back_a_persons_answer(label_studio):
    from label_studio_sdk.client import LabelStudio

    ls = LabelStudio(base_url=label_studio.url, api_key=label_studio.api_key)
    # Both kinds of key work through the sdk: a personal access token (the UI's default) and a legacy token.
    me = ls.users.whoami()
    assert me.email == LabelStudio(base_url=label_studio.url, api_key=label_studio.legacy_token).users.whoami().email

    images = ls.projects.create(title="ants-bees suspects", label_config=image_config(["ant", "bee"]),
                                expert_instruction=GUIDELINE, show_instruction=True)
    texts = ls.projects.create(title="sms-spam incoming", label_config=text_config(["ham", "spam"]),
                               expert_instruction=GUIDELINE, show_instruction=True)
    assert ls.projects.get(images.id).expert_instruction == GUIDELINE

    # The image goes up as a file (not committed as a task of its own), then a JSON task points at
    # Label Studio's copy, carrying our example id, the current label and the champion's prediction.
    headers = label_studio.headers()
    image = png_bytes()
    upload = httpx.post(f"{label_studio.url}/api/projects/{images.id}/import", params={"commit_to_project": "false"},
                        files={"file": ("ant-17.png", image, "image/png")}, headers=headers, timeout=60)
    assert upload.status_code == 201, upload.text
    (file_id,) = upload.json()["file_upload_ids"]
    stored = httpx.get(f"{label_studio.url}/api/import/file-upload/{file_id}", headers=headers, timeout=30).json()
    image_url = f"/data/{stored['file']}"  # MEDIA_URL + upload/<project>/<prefix>-ant-17.png
    imported = ls.projects.import_tasks(
        images.id, return_task_ids=True,
        request=[{"data": {"image": image_url, "example_id": "train/ants/ant-17.png", "current_label": "ant"},
                  "predictions": [{"model_version": "champion-v3", "score": 0.61, "result": choice("image", "bee")}]}])
    (image_task,) = imported.task_ids
    imported = ls.projects.import_tasks(
        texts.id, return_task_ids=True,
        request=[{"data": {"text": "WINNER! Claim your prize now", "example_id": "row-42", "current_label": ""}}])
    (text_task,) = imported.task_ids

    # A person answers as the UI does: POST /api/tasks/<id>/annotations/ (the champion said bee; they say ant).
    for task, to_name, label in ((image_task, "image", "ant"), (text_task, "text", "spam")):
        answer = httpx.post(f"{label_studio.url}/api/tasks/{task}/annotations/", headers=headers, timeout=30,
                            json={"result": choice(to_name, label), "lead_time": 4.2})
        assert answer.status_code == 201, answer.text

    # Read back through the sdk, as `label pull` will.
    tasks = list(ls.tasks.list(project=images.id)) + list(ls.tasks.list(project=texts.id))
    assert len(tasks) == 2
    by_id = {task.id: task for task in tasks}
    assert by_id[image_task].data["example_id"] == "train/ants/ant-17.png"
    assert by_id[image_task].is_labeled and by_id[text_task].is_labeled
    (annotation,) = ls.annotations.list(id=image_task)
    assert annotation.result[0]["value"]["choices"] == ["ant"]
    assert annotation.completed_by == me.id and not annotation.was_cancelled
    (annotation,) = ls.annotations.list(id=text_task)
    assert annotation.result[0]["value"]["choices"] == ["spam"]
    (prediction,) = ls.predictions.list(task=image_task)
    assert prediction.model_version == "champion-v3" and prediction.result[0]["value"]["choices"] == ["bee"]
    # Labellers see the predictions of the project's model_version as pre-annotations: the first import
    # with predictions set it; a new champion's predictions need `ls.projects.update(id, model_version=...)`.
    assert ls.projects.get(images.id).model_version == "champion-v3"

    # Label Studio serves the uploaded bytes itself, to its users only.
    served = httpx.get(f"{label_studio.url}{by_id[image_task].data['image']}", headers=headers, timeout=30)
    assert served.status_code == 200 and served.content == image
    assert httpx.get(f"{label_studio.url}{image_url}", timeout=30).status_code == 401
