"""The label-quality audit's GX validation results, rendered as a Great Expectations Data Docs site.

The suites do not run again: the results the audit kept (`QualityReport.gx_results`, or that dict
read back from its JSON file) go into a fresh ephemeral context's in-memory validation-results
store, where a ValidationDefinition or Checkpoint run would have stored them, with the suites
rebuilt from the results' expectation configurations. One SiteBuilder (the same one a Checkpoint's
UpdateDataDocsAction calls) then renders the index, one page per validation and one per suite.

Nothing is written outside the given folder: the context stays in memory, and its default
`local_site` (a temporary folder) is removed before the build. The pages load their styles and
scripts from public CDNs when a browser opens them; building them uses no network. Of the 4 MB of
static files GX copies (tutorial GIFs, fonts, logos), only those a page refers to are kept.

GX's renderer writes values into the pages without HTML-escaping them, so a label or a text such as
`<img src=x onerror=...>` would run as markup in the page (seen with GX 1.x). Every string of the
results is escaped before rendering (`_html_safe`); the JSON file keeps the raw values.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.audit.quality import RUN_NAME, QualityReport

SITE_NAME = "transferflow"
STATIC_REFERENCE = re.compile(r"static/[\w./-]+")
UNSAFE_IN_HTML = re.compile(r"[&<>\"']")


def write_data_docs(results: QualityReport | Mapping[str, Mapping[str, Any]], folder: Path) -> Path:
    """Render the audit's validation results as a Data Docs site in `folder`, a folder of its own
    (created if missing; the index lists these results only); return the path of its index.html."""
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResultSchema
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    gx_results = results.gx_results if isinstance(results, QualityReport) else results
    if not gx_results:
        raise ValueError("no GX validation results to render (a QualityReport from audit_labels has them)")
    folder = Path(folder).resolve()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    for default_site in list(context.list_data_docs_sites()):
        context.delete_data_docs_site(default_site)
    site: Any = {  # Any: GX's TypedDict for it lacks show_how_to_buttons, which SiteBuilder takes
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,  # no GX tutorial links
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(folder)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    context.add_data_docs_site(SITE_NAME, site)
    schema = ExpectationSuiteValidationResultSchema()
    for frame_name, as_json in gx_results.items():
        result = schema.load(_html_safe(dict(as_json)))
        suite = context.suites.add(gx.ExpectationSuite(
            name=result.suite_name, expectations=[r.expectation_config for r in result.results]))
        run = result.meta.get("run_id") or {"run_name": RUN_NAME}
        context.validation_results_store.store_validation_results(
            suite_validation_result=result,
            suite_validation_result_identifier=ValidationResultIdentifier(
                ExpectationSuiteIdentifier(name=suite.name), RunIdentifier(**run), batch_identifier=frame_name),
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite.name))
    context.build_data_docs(site_names=[SITE_NAME])
    _drop_unreferenced_static_files(folder)
    return folder / "index.html"


def _html_safe(value: Any) -> Any:
    """A copy with every string (and dict key) that holds &, <, >, " or ' HTML-escaped; other values
    unchanged, so names, ids and timestamps stay as GX expects them."""
    if isinstance(value, str):
        return html.escape(value) if UNSAFE_IN_HTML.search(value) else value
    if isinstance(value, Mapping):
        return {_html_safe(key): _html_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_html_safe(item) for item in value]
    return value


def _drop_unreferenced_static_files(folder: Path) -> None:
    """GX copies its whole static folder into every site; the rendered pages use a favicon of it."""
    static = folder / "static"
    used = {static / ref.removeprefix("static/") for page in folder.rglob("*.html")
            for ref in STATIC_REFERENCE.findall(page.read_text(encoding="utf-8"))}
    for path in sorted(static.rglob("*"), reverse=True):  # files before the folders holding them
        if path.is_file() and path not in used:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
