"""Screenshots of a pushed review queue, as a labeller sees it in Label Studio.

Why: the integration tests check the API answers of `transferflow label push`; only a real browser
shows what a person gets: the image, the hint header, the guideline and the champion's
pre-annotation on sighted tasks, and none on blind (test) ones. This script makes the pictures
in docs/images/ and lets a developer look again after a change to tasks/labeling/label_studio.py.

Run (needs `make label-studio` and Chromium, e.g. `apt-get install chromium`):
    .venv/bin/python docs/tools/label_studio_screenshot.py OUT_DIR
It starts a throwaway Label Studio on loopback (tests/labelstudio_server.py), pushes a small
`suspects` queue of hymenoptera images, logs in with httpx, hands the session cookie to headless
Chromium over the DevTools protocol and writes, in ~45 s:
- label-studio-data-manager.png: the project's task list;
- label-studio-sighted.png: a train task in the labelling view, the champion's choice pre-ticked;
- label-studio-instructions.png: the guideline, which the task view shows behind its Instructions
  button (`show_instruction` opens it by itself only in the "Label All Tasks" stream);
- label-studio-blind.png: a test task, nothing pre-ticked.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for tasks/ and tests/

from tasks.core.hashing import sha256_file
from tasks.labeling.label_studio import Studio, push
from tasks.labeling.queues import Queue, QueueItem
from tests.browser import Browser
from tests.labelstudio_server import label_studio_server

IMAGES = Path(os.environ.get("HYMENOPTERA", "/work/shared/datasets/hymenoptera"))
GUIDELINE = """# Ants or bees?
## ants
Wingless workers, elbowed antennae, a narrow waist (petiole). Label a winged queen *ants* too.
## bees
Hairy bodies, two pairs of wings, often pollen on the legs. Wasps and hoverflies are neither: skip them.
"""
# The labelling view has rendered the task's image (not a data manager thumbnail) and it has loaded.
IMAGE_LOADED = ("[...document.querySelectorAll('.lsf-main-view img, [class*=lsf-image] img')]"
                ".some(i => i.complete && i.naturalWidth)")

TICKED = "[...document.querySelectorAll('.lsf-main-view input:checked')].map(i => i.closest('label')?.innerText.trim())"


def demo_queue() -> Queue:
    """Three sighted (train) items with the champion's prediction, one blind (test) item without."""
    ants, bees = sorted((IMAGES / "train/ants").glob("*.jpg")), sorted((IMAGES / "train/bees").glob("*.jpg"))

    def item(path: Path, label: str, suggestion: str, score: float, split: str, prediction: str) -> QueueItem:
        return QueueItem(sha256_file(path), str(path), label, suggestion, score, split, prediction,
                         0.87 if prediction else None)

    return Queue("suspects", "image", "demo", (
        item(ants[0], "ants", "bees", 0.04, "train", "bees"),
        item(bees[0], "bees", "", 0.31, "train", "bees"),
        item(ants[1], "bees", "ants", 0.12, "train", "bees"),
        item(ants[2], "bees", "ants", 0.08, "test", "")))


def session_cookie(url: str, email: str, password: str) -> str:
    """Log in through the /user/login/ form, as a browser would; the `sessionid` it sets."""
    with httpx.Client(base_url=url, timeout=60) as client:
        csrf = client.get("/user/login/").cookies["csrftoken"]
        form = {"email": email, "password": password, "csrfmiddlewaretoken": csrf}
        answer = client.post("/user/login/", data=form, headers={"Referer": f"{url}/user/login/"})
        if answer.status_code != 302 or "sessionid" not in client.cookies:
            raise RuntimeError(f"login answered {answer.status_code}: {answer.text[:300]}")
        return str(client.cookies["sessionid"])


def main(out: Path) -> None:
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ls-screenshot-") as temp, label_studio_server(Path(temp) / "ls") as ls:
        guideline = Path(temp) / "guideline.md"
        guideline.write_text(GUIDELINE)
        queue = demo_queue()
        studio = Studio(ls.url, ls.api_key)
        result = push(studio, "hymenoptera-demo", queue, ["ants", "bees"], guideline, "3")
        tasks = {t.data["example_id"]: t.id for t in studio.client.tasks.list(project=result.project_id)}
        sighted, blind = tasks[queue.items[0].example_id], tasks[queue.items[-1].example_id]
        browser = Browser(Path(temp) / "chromium")
        try:
            browser.call("Network.enable")
            browser.call("Network.setCookie", name="sessionid", value=session_cookie(ls.url, ls.username, ls.password),
                         url=ls.url)
            data = f"{ls.url}/projects/{result.project_id}/data/"
            browser.open(data, "document.querySelector('.dm-table__row-wrapper, [class*=table__row]')")
            browser.screenshot(out / "label-studio-data-manager.png")
            for name, task in (("sighted", sighted), ("blind", blind)):
                browser.open(f"{data}?task={task}", IMAGE_LOADED)
                browser.screenshot(out / f"label-studio-{name}.png")
                print(f"  {name} task {task}: pre-ticked {browser.evaluate(TICKED)}")
                if name == "sighted":  # the guideline: the project's instructions, behind the Instructions button
                    browser.evaluate("[...document.querySelectorAll('button')]"
                                     ".find(b => b.textContent.trim() === 'Instructions').click()")
                    browser.wait("document.body.innerText.includes('Wingless workers')")
                    browser.screenshot(out / "label-studio-instructions.png")
        finally:
            browser.close()
    print(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
