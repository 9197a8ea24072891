"""Debian's Chromium for the page's browser tests (driven by Playwright), the
phone-size checks every page must pass, and axe-core's accessibility rules.

axe-core comes bundled in PyPI's ``axe-playwright-python`` (``axe.min.js``; the
``[test]`` extra pins it): nothing is downloaded at test time."""

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
#: A desk's screen, CSS pixels.
DESKTOP = {"width": 1280, "height": 800}
#: The axe-core rule sets run: WCAG 2.0/2.1 A and AA, and Deque's best practices.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
#: The impacts that fail a page.
AXE_FAILING = ("serious", "critical")
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
    width, screen = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    if width > screen:
        problems.append(f"scrolls horizontally: {width} px wide on a {screen} px screen")
    for name, w, h in page.evaluate(_TARGETS):
        if w < MIN_TARGET or h < MIN_TARGET:
            problems.append(f"{name!r} is {w} x {h} px")
    return problems


def axe_problems(page: Page) -> list[str]:
    """axe-core's serious and critical violations on ``page`` as it is now (rule id,
    impact, help and the first offending elements)."""
    from axe_playwright_python.sync_playwright import Axe

    options = {"runOnly": {"type": "tag", "values": AXE_TAGS}, "resultTypes": ["violations"]}
    results = Axe().run(page, options=options)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + "; ".join(" ".join(n["target"]) for n in v["nodes"][:3])
        for v in results.response["violations"]
        if v.get("impact") in AXE_FAILING
    ]


def page_problems(page: Page) -> list[str]:
    """Everything that fails a page at its current size: :func:`phone_problems`
    (no horizontal scrolling, 44 px targets) and :func:`axe_problems`."""
    return phone_problems(page) + axe_problems(page)
