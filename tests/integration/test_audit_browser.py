"""The audit report in a real browser: loads with no errors, fetches nothing, draws the flow.

Needs Debian's chromium (.ci/run installs it). Without it the test is skipped on a developer's
machine, but fails when RECRUIT_REQUIRE_BROWSER or CI is set, so CI cannot pass without looking.
"""

from __future__ import annotations

import os

import pytest

from recruit.audit import Rule, audit
from tests.audit_helpers import synthetic_region
from tests.browser import REQUIRE_ENV, Browser, chromium

pytestmark = pytest.mark.slow


def test_the_report_opens_offline_with_no_errors_and_draws_the_flow(tmp_path):
    if chromium() is None:
        message = "headless Chromium is needed: apt-get install -y chromium"
        if os.environ.get(REQUIRE_ENV) or os.environ.get("CI"):
            pytest.fail(f"{message} ({REQUIRE_ENV} or CI is set)")
        pytest.skip(message)
    region = synthetic_region(f"sqlite:///{tmp_path / 'r.db'}", tmp_path, practices=3, patients=600)
    audit(region.engine, [region.run_id], tmp_path / "out", Rule())
    page = (tmp_path / "out" / "audit.html").resolve()

    browser = Browser(tmp_path / "profile")
    try:
        browser.open(page.as_uri())
        diagrams = browser.evaluate(
            """[...document.querySelectorAll('svg.flow')].map(svg => {
                const box = svg.getBoundingClientRect();
                return {width: box.width, height: box.height,
                        boxes: svg.querySelectorAll('rect').length,
                        arrows: svg.querySelectorAll('line').length,
                        text: svg.textContent};
            })"""
        )
        screenshot = tmp_path / "audit.png"
        browser.screenshot(screenshot)
        pdf = browser.pdf()
        errors, requests = browser.errors(), browser.requests()
    finally:
        browser.close()

    assert errors == []
    assert requests == [page.as_uri()], "the report must fetch nothing but itself"
    assert len(diagrams) == 4  # all practices, then each of the three
    first = diagrams[0]
    assert first["width"] > 500 and first["height"] > 500
    assert first["boxes"] >= 14 and first["arrows"] >= 10
    for words in ("Records searched", "Excluded by the search rules", "Screened by the GP", "Now in work"):
        assert words in first["text"]
    assert screenshot.stat().st_size > 20_000 and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf[:5] == b"%PDF-" and pdf.count(b"/Type /Page") >= 2
