"""Fixtures for the browser tests."""

from __future__ import annotations

from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "static"
STATIC_ORIGIN = "http://sluice.test"


@pytest.fixture
def static_page(browser):
    """A chromium page on a made-up origin serving static/ from disk (the modules as shipped,
    dagre loaded), for testing a module without a server: `await import('/static/...')`."""
    context = browser.new_context()
    page = context.new_page()

    def serve(route):
        path = route.request.url[len(STATIC_ORIGIN):].split("?")[0]
        if path.startswith("/static/"):
            route.fulfill(path=str(STATIC / path[len("/static/"):]), content_type="text/javascript")
        else:
            route.fulfill(body="<!doctype html><title>modules</title><script src='/static/vendor/dagre.min.js'></script>",
                          content_type="text/html")

    page.route(f"{STATIC_ORIGIN}/**", serve)
    page.goto(f"{STATIC_ORIGIN}/")
    yield page
    context.close()
