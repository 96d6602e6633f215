"""Live-server and browser fixtures: a real daphne process and Debian's chromium.

`live_server` forks daphne with Sluice's full ASGI application (HTTP + websockets) against
the test database (a file, see settings), so browser and websocket tests talk to what users
talk to. `browser` launches /usr/bin/chromium through Playwright; nothing is downloaded.
"""

from __future__ import annotations

import gc
import os
import shutil
from dataclasses import dataclass
from functools import partial

import pytest


@dataclass
class LiveServer:
    url: str
    ws_url: str
    port: int


@pytest.fixture(autouse=True)
def _live_server_helper():
    """Replaces pytest-django's autouse helper of the same name, which expects ITS live_server
    (it calls `_live_server_modified_settings` on whatever `live_server` is) and breaks on ours."""
    yield


@pytest.fixture
def live_server(transactional_db, settings):
    from channels.testing.live import make_application
    from daphne.testing import DaphneProcess
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
    get_application = partial(make_application, static_wrapper=ASGIStaticFilesHandler)
    process = DaphneProcess("127.0.0.1", get_application, setup=_in_the_forked_server)
    # The server is a fork of this process. librdkafka clients are not fork-safe: one that is
    # garbage here (an earlier test's consumer in a reference cycle) and collected in the fork
    # aborts it on a librdkafka assertion (rd_kafka_cgrp_destroy_final), and the browser then
    # finds the port closed mid-test. So nothing collectable crosses the fork.
    gc.collect()
    process.start()
    if not process.ready.wait(timeout=30):
        process.terminate()
        raise RuntimeError("daphne did not start for the live server")
    port = process.port.value
    yield LiveServer(url=f"http://127.0.0.1:{port}", ws_url=f"ws://127.0.0.1:{port}", port=port)
    died = process.exitcode
    process.terminate()
    process.join(timeout=10)
    if died is not None:
        # Say so, instead of leaving a test to time out on a closed port.
        errors = [] if process.errors.empty() else [process.errors.get()[1]]
        raise RuntimeError(f"the live server (daphne) died during the test with exit code {died}"
                           + "".join(f"\n{error}" for error in errors))


def _in_the_forked_server():
    from channels.testing.live import set_database_connection

    # What the fork inherited stays as it was: the cyclic collector never frees (and so never
    # destroys) a Kafka client of the parent in here.
    gc.freeze()
    set_database_connection()


CHROMIUM = os.environ.get("SLUICE_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio loop running in this thread for the whole
    # session; Django would then refuse the tests' own ORM calls as "async unsafe".
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"chromium not found at {CHROMIUM}: `make test` installs Debian's chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    yield page
    context.close()


def login(page, live_server: LiveServer, username: str, password: str) -> None:
    """Sign in through the real login form."""
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")


ARTIFACTS = os.path.join(os.path.dirname(__file__), "artifacts")


def screenshot(page, name: str) -> str:
    """Save a screenshot under tests/artifacts/ (ignored by git) to look at."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, f"{name}.png")
    page.screenshot(path=path, full_page=False)
    return path
