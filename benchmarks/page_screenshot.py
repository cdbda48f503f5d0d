"""A screenshot of the page at / for the README: the real service, a test reviewer, their recommendations.

    python benchmarks/page_screenshot.py --env industrial --out docs/serving_page.png
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from load_test import ROOT, free_port, start_server, stop_server, wait_ready


def main() -> None:
    """Start the service, pick the first test reviewer on the page, recommend, take the screenshot."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", default=str(ROOT))
    parser.add_argument("--env", default=None)
    parser.add_argument("--reviewer", type=int, default=1, help="which test reviewer of the list (1: the first)")
    parser.add_argument("--params", nargs="*", default=[])
    parser.add_argument("--out", default=str(ROOT / "docs" / "serving_page.png"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(Path(args.project), args.env, args.params, port, Path("/tmp/page_screenshot_server.log"))
    try:
        wait_ready(url, proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url + "/")
            page.wait_for_function("document.querySelectorAll('#reviewer option').length > 1", timeout=60_000)
            page.select_option("#reviewer", index=args.reviewer)
            page.click("#recommend")
            page.wait_for_selector("#results tbody tr", timeout=300_000)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out, full_page=True)
            print(page.locator("#meta").inner_text())
            browser.close()
    finally:
        stop_server(proc)


if __name__ == "__main__":
    main()
