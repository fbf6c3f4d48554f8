"""Drive the MLflow UI in headless Chromium the way a user would, and save screenshots:
experiments list -> an experiment's runs (the sweep expanded) -> the compare view of two runs
-> the sweep's run page, whose description is the headline table of ``lossbench-report``.

    python scripts/ui_screenshots.py --experiment demo --out docs   # after `make demo`

(`make demo` runs ``lossbench-report --experiment demo``, which writes that description.)

Needs Debian's ``chromium`` (``make system-deps``) and Playwright (the ``[browser]`` extra);
Playwright drives the system browser, so nothing is downloaded. The browser test
(tests/test_ui_browser.py) runs the same steps on a fresh demo sweep.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lossbench.tracking.store import tracking_uri
from lossbench.ui import free_port, serving

# headless in a container: no sandbox (we may be root), no GPU, no calls home
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip


def chromium_path() -> str | None:
    """Debian's Chromium, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browse(
    address: str, experiment: str, compare: Sequence[str], out: Path, timeout_s: float = 60
) -> dict[str, object]:
    """Click through the UI at ``address``: open ``experiment`` from the experiments list,
    expand its sweep, tick the runs named in ``compare`` and press Compare, then open the
    (latest) sweep's run page. Saves ``mlflow-runs.png``, ``mlflow-compare.png`` and
    ``mlflow-sweep.png`` in ``out``; returns what the pages showed: the run names linked in
    the runs table and its text, the compare page's heading and text, the rows of the sweep
    page's first description table (each a list of cell texts; none when the sweep has no
    report yet) and that page's text."""
    from playwright.sync_api import sync_playwright

    browser_path = chromium_path()
    if browser_path is None:
        raise RuntimeError("Chromium is not installed: apt-get install chromium")
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=browser_path, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(timeout_s * 1000)
            page.goto(f"{address}/#/experiments", wait_until="domcontentloaded")
            page.get_by_text("Model training", exact=True).click()  # not the GenAI views
            page.get_by_role("link", name=experiment, exact=True).click()
            page.get_by_text(re.compile(r"^sweep-")).first.wait_for()
            close_assistant = page.get_by_role("button", name="Close")
            if close_assistant.count():  # MLflow's assistant panel hides half the table
                close_assistant.first.click()
            # runs are nested under their sweep's run: expand every sweep
            for expand in page.locator(
                'button[data-component-id$="runnamecellrenderer.tsx_46"]'
            ).all():
                expand.click()
            for name in compare:
                row = page.get_by_role("row").filter(
                    has=page.get_by_role("link", name=name, exact=True)
                )
                row.locator(".ag-selection-checkbox input").check()
            links = [a.inner_text() for a in page.locator('a[href*="/runs/"]').all()]
            runs_text = page.inner_text("body")
            page.screenshot(path=str(out / "mlflow-runs.png"))
            page.get_by_role("button", name="Compare", exact=True).click()
            heading = page.get_by_text(re.compile(r"^Comparing \d+ Runs? from"))
            heading.wait_for()
            page.get_by_text(compare[-1], exact=True).first.wait_for()
            page.screenshot(path=str(out / "mlflow-compare.png"))
            seen: dict[str, object] = {
                "runs_table": links,
                "runs_text": runs_text,
                "compare_heading": heading.inner_text(),
                "compare_text": page.inner_text("body"),
                "compare_url": page.url,
            }
            page.go_back()  # to the runs table, and from there to the (latest) sweep's page
            page.get_by_role("link", name=re.compile(r"^sweep-")).first.click()
            seen["sweep_table"] = _sweep_page(page, out / "mlflow-sweep.png")
            seen["sweep_text"] = page.inner_text("body")
            return seen
        finally:
            browser.close()


def _sweep_page(page: Any, shot: Path) -> list[list[str]]:
    """On a run's page: screenshot its Description; the rows of the description's table, as
    cell texts (none when it has no table)."""
    page.get_by_text("About this run", exact=True).wait_for()
    close_assistant = page.get_by_role("button", name="Close")
    if close_assistant.count():
        close_assistant.first.click()
    description = page.get_by_text("Description", exact=True).first
    description.wait_for()
    show_more = page.get_by_text("Show more", exact=True)
    if show_more.count():  # a long description is folded
        show_more.first.click()
    table = page.locator("table").filter(has=page.locator("th"))
    rows: list[list[str]] = []
    if table.count():
        rows = [
            [cell.inner_text().strip() for cell in row.locator("td").all()]
            for row in table.first.locator("tbody tr").all()
        ]
    description.scroll_into_view_if_needed()
    page.screenshot(path=str(shot))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Screenshots of an experiment's runs, of two of them compared, and of its sweep's page."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", help="MLflow store (default: as training)")
    parser.add_argument("--experiment", default="demo")
    parser.add_argument("--compare", nargs=2, metavar="RUN_NAME",
                        default=["moons-cross_entropy-adam-constant-s0", "moons-focal-adam-constant-s0"])  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args(argv)
    uri = args.tracking_uri or tracking_uri({"root": "mlruns"})
    with (
        tempfile.TemporaryDirectory() as tmp,
        serving(uri, free_port(), Path(tmp) / "mlflow-ui.log") as address,
    ):
        seen = browse(address, args.experiment, args.compare, args.out)
    shots = ", ".join(f"{args.out}/mlflow-{name}.png" for name in ("runs", "compare", "sweep"))
    print(f"{seen['compare_heading']}; sweep description: {len(seen['sweep_table'])} rows: {shots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
