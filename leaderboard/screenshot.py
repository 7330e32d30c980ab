"""A PNG of the built leaderboard page, as a browser shows it (the README's picture of the board).

    python -m leaderboard.screenshot SITE/index.html docs/board.png [--width 1400 --height 1000]

Drives Debian's chromium (``/usr/bin/chromium``) with playwright, offline, from ``file://``; the page
needs no network. The top of the page at the given viewport is kept: what a reader sees first.
"""
from __future__ import annotations

import argparse
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")


def screenshot(page: Path, out: Path, width: int = 1400, height: int = 1000) -> Path:
    from playwright.sync_api import sync_playwright

    if not page.is_file():
        raise SystemExit(f"{page}: no such page (build it first: make leaderboard)")
    if not CHROMIUM.exists():
        raise SystemExit(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        context = browser.new_context(offline=True, viewport={"width": width, "height": height})
        tab = context.new_page()
        tab.goto(page.resolve().as_uri(), wait_until="load")
        out.parent.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(out))
        browser.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("page", type=Path, help="the built page (SITE/index.html)")
    p.add_argument("out", type=Path, help="the PNG to write")
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=1000)
    args = p.parse_args()
    print(screenshot(args.page, args.out, args.width, args.height))


if __name__ == "__main__":
    main()
