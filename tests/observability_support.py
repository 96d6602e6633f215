"""Helpers for the metrics, health and alert tests: scraping, polling, workflows."""

from __future__ import annotations

import time
import uuid

import httpx
from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, frozenset of label items): value} of a Prometheus text exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(scraped: dict, name: str, **labels) -> float:
    """One sample's value, 0 when absent (a counter that never moved has no sample)."""
    return scraped.get((name, frozenset(labels.items())), 0.0)


def scrape(url: str, token: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(url, headers=headers, timeout=10)
    assert response.status_code == 200, (response.status_code, response.text[:300])
    return samples(response.text)


def wait_for(predicate, timeout: float = 60.0, what: str = "condition", interval: float = 0.2):
    """Poll `predicate` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except (httpx.HTTPError, AssertionError) as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


def wait_for_samples(read, predicate, timeout: float = 15.0, what: str = "the metrics"):
    """Scrape with `read()` until `predicate(samples)` holds; returns those samples."""
    def attempt():
        current = read()
        return current if predicate(current) else None

    return wait_for(attempt, timeout, what)


def unique(slug: str) -> str:
    return f"{slug}-{uuid.uuid4().hex[:6]}"


def three_steps(slug: str = "three") -> dict:
    return {
        "slug": slug, "name": "Three steps", "trigger": {"type": "manual"},
        "steps": [
            {"id": "prepare", "type": "transform", "config": {"output": {"n": "{{ trigger.n + 1 }}"}}},
            {"id": "echo", "type": "python", "config": {"handler": "demo.echo", "input": "{{ steps.prepare.output }}"}},
            {"id": "finish", "type": "transform", "config": {"output": {"result": "{{ steps.echo.output.n * 10 }}"}}},
        ],
        "edges": [{"from": "prepare", "to": "echo"}, {"from": "echo", "to": "finish"}],
    }


def failing(slug: str, attempts: int = 3, message: str = "card declined") -> dict:
    return {
        "slug": slug, "name": "Always fails", "trigger": {"type": "manual"},
        "steps": [{"id": "charge", "type": "python",
                   "config": {"handler": "demo.fail", "input": {"message": message}},
                   "retry": {"max_attempts": attempts, "backoff_seconds": 0.1}}],
        "edges": [],
    }
