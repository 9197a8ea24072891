"""Debian's Chromium for the page's browser tests (driven by Playwright), and the
phone-size checks every patient page must pass."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
]

#: A phone held upright (iPhone X class), CSS pixels.
PHONE = {"width": 375, "height": 812}
#: The smallest touch target (WCAG 2.5.5, Apple HIG): width and height, CSS pixels.
MIN_TARGET = 44

_TARGETS = """() => [...document.querySelectorAll(
    'a, button, select, input:not([type=hidden]):not([type=checkbox]):not([type=radio]),'
    + ' label.check, label.radio')]
  .map(e => [e, e.getBoundingClientRect()])
  .filter(([e, r]) => r.width > 0 && r.height > 0)
  .map(([e, r]) => [e.tagName + ' ' + (e.textContent || e.getAttribute('aria-label') || '')
                      .trim().slice(0, 40), Math.floor(r.width), Math.floor(r.height)])"""


def phone_problems(page: Page) -> list[str]:
    """What breaks the phone layout on ``page``: a document wider than the screen
    (horizontal scrolling), touch targets smaller than 44 x 44 px."""
    problems = []
    width = page.evaluate("document.scrollingElement.scrollWidth")
    if width > PHONE["width"]:
        problems.append(f"scrolls horizontally: {width} px wide")
    for name, w, h in page.evaluate(_TARGETS):
        if w < MIN_TARGET or h < MIN_TARGET:
            problems.append(f"{name!r} is {w} x {h} px")
    return problems
