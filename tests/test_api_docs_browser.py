"""The API docs page in a real browser: Swagger UI renders from locally served assets."""

import pytest
from django.contrib.auth import get_user_model

from tests.live import login, screenshot


@pytest.mark.browser
def test_swagger_ui_renders_the_sluice_api_offline(live_server, page, monkeypatch):
    # Playwright's sync API keeps an event loop running in this thread; the ORM calls here are
    # plain synchronous test setup, so Django's async-safety guard does not apply.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    get_user_model().objects.create_user("reader", password="a-long-password-1")
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{live_server.url}/api/docs/")
    assert "/accounts/login/" in page.url  # the docs need a login
    login(page, live_server, "reader", "a-long-password-1")
    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
    assert "Sluice API" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector("text=/api/workflows/{slug}/publish/", timeout=20_000)
    screenshot(page, "api-docs")
    # Everything came from the Sluice server itself: no CDN is reachable here.
    assert requested and all(url.startswith(live_server.url) or url.startswith("data:") for url in requested), [
        url for url in requested if not url.startswith(live_server.url)]
