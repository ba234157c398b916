"""Open the Snakemake report in headless Chromium, show every result it holds,
check each figure rendered and each table has rows, and save a screenshot of
each (Debian's chromium; Playwright drives it, no browser download needed).

    python scripts/check_report.py results/report.html --shots results/report-shots
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path


def find_browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def check(report: Path, shots: Path, browser: str) -> list[dict]:
    from playwright.sync_api import sync_playwright

    shots.mkdir(parents=True, exist_ok=True)
    seen = []
    with sync_playwright() as p:
        chrome = p.chromium.launch(executable_path=browser,
                                   args=["--no-sandbox", "--disable-gpu"])
        page = chrome.new_page(viewport={"width": 1400, "height": 1000})
        # Offline: any request that leaves the file fails the check.
        page.route(re.compile(r"^https?://"), lambda route: route.abort())
        page.goto(report.absolute().as_uri())
        page.wait_for_timeout(1000)
        sidebar = [line.strip() for line in page.inner_text("body").splitlines() if line.strip()]
        categories = sidebar[sidebar.index("RESULTS") + 1 :]  # the report's result categories
        for category in categories:
            page.goto(report.absolute().as_uri())
            page.wait_for_timeout(500)
            page.get_by_text(category, exact=True).first.click()
            page.wait_for_timeout(400)
            files = [r.split("\t")[0].strip() for r in page.locator("tr").all_inner_texts()
                     if r.strip().startswith("results/")]
            for name in files:
                page.locator("tr", has_text=name).first.locator("a[iconname=eye]").click()
                page.wait_for_timeout(800)
                images = page.eval_on_selector_all(
                    "img", "els => els.filter(e => e.src.startsWith('data:image/png'))"
                           ".map(e => e.naturalWidth)")
                rows = page.locator("table tr").count()
                shot = shots / (Path(name).name + ".png")
                page.screenshot(path=str(shot))
                seen.append({"category": category, "file": name, "png_widths": images,
                             "table_rows": rows, "screenshot": str(shot)})
        chrome.close()
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--shots", type=Path, default=Path("results/report-shots"))
    args = parser.parse_args()
    browser = find_browser()
    if browser is None:
        print("no chromium on PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    seen = check(args.report, args.shots, browser)
    bad = [s for s in seen if s["file"].endswith(".png") and not any(w > 0 for w in s["png_widths"])]
    print(json.dumps({"results": len(seen), "figures_not_shown": [b["file"] for b in bad],
                      "shown": [s["file"] for s in seen]}))
    return 1 if bad or not seen else 0


if __name__ == "__main__":
    sys.exit(main())
