"""A secret planted in a real runner's environment never leaves it.

Real processes: `manage.py runner` (with the secret in its environment), `manage.py bridge`,
daphne (live_server) and the embedded broker. Every way a value could leak is tried, each in
a run started through the REST API:
- a python `demo.echo` step whose input is `{{ secret('X') }}`;
- an http step sending the secret in a header and in the query, to a local server that
  echoes both back (in its body and a response header), and again to a route answering 500;
- run input holding `«secret:X»`, which must stay text;
- a handler that raises with the secret in its message, and one that logs it (with a
  traceback) through `logging`;
- a secret the runner does not have (the error must be one sentence).
Then the secret, and its JSON-escaped, URL-encoded, HTML-escaped and base64 forms, are looked
for in the REST API's JSON, the run pages' HTML, every Sluice topic read from the start
(wf.history included), a dump of the database, every file in the data directories (database
and broker) and the processes' output: 0 hits. A random canary given as run input is looked
for in the same places and must be found, so each search is known to see what it searches.
"""

from __future__ import annotations

import html
import json
import secrets as random
import sqlite3
import time
import uuid
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from django.conf import settings

from tests.echo_server import EchoHandler, echo_server  # noqa: F401  (fixture)
from tests.runtime_support import HistoryLog, ManageProcess
from tests.test_secrets import encoded_forms

pytestmark = pytest.mark.kafka

SECRET_NAME = "SLUICE_TEST_PLANTED_SECRET"


def one_step(slug: str, step: dict) -> dict:
    return {"slug": slug, "name": slug, "trigger": {"type": "manual"},
            "steps": [{"id": "only", "retry": {"max_attempts": 1}, **step}], "edges": []}


def workflows(echo: str) -> dict[str, dict]:
    secret = "{{ secret('%s') }}" % SECRET_NAME
    return {
        "echo": {"type": "python", "config": {"handler": "demo.echo",
                                               "input": {"secret": secret, "canary": "{{ trigger.canary }}"}}},
        "http-echo": {"type": "http", "config": {"url": f"{echo}/echo", "headers": {"Authorization": f"Bearer {secret}"},
                                                 "query": {"api_key": secret, "canary": "{{ trigger.canary }}"}}},
        "http-fail": {"type": "http", "config": {"url": f"{echo}/fail", "query": {"api_key": secret},
                                                 "headers": {"Authorization": secret}}},
        "data-marker": {"type": "python", "config": {"handler": "demo.echo", "input": "{{ trigger }}"}},
        "raises": {"type": "python", "config": {"handler": "leaky.raise", "input": {"s": secret}}},
        "logs": {"type": "python", "config": {"handler": "leaky.log",
                                               "input": {"s": secret, "canary": "{{ trigger.canary }}"}}},
        "missing": {"type": "python", "config": {"handler": "demo.echo",
                                                  "input": "{{ secret('SLUICE_TEST_NOT_SET_ANYWHERE') }}"}},
    }


def raw_records(prefix: str) -> bytes:
    """Every record of every Sluice topic, read from the start (aborted ones included)."""
    consumer = Consumer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS, "group.id": f"leak-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "isolation.level": "read_uncommitted"})
    try:
        topics = [name for name in consumer.list_topics(timeout=10).topics if name.startswith(prefix)]
        assert any(name.endswith("history") for name in topics), topics
        partitions = []
        for name in topics:
            for index in consumer.list_topics(name, timeout=10).topics[name].partitions:
                partitions.append(TopicPartition(name, index, 0))
        ends = {(p.topic, p.partition): consumer.get_watermark_offsets(p, timeout=10)[1] for p in partitions}
        consumer.assign(partitions)
        chunks, deadline = [], time.monotonic() + 60
        done = {key for key, end in ends.items() if end == 0}
        while len(done) < len(ends) and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error():
                    continue
                chunks += [msg.key() or b"", msg.value() or b""]
                chunks += [value for _, value in (msg.headers() or []) if value]
                if msg.offset() + 1 >= ends[(msg.topic(), msg.partition())]:
                    done.add((msg.topic(), msg.partition()))
        return b"\n".join(chunks)
    finally:
        consumer.close()


def files_under(*directories: Path) -> bytes:
    return b"\n".join(path.read_bytes() for directory in directories for path in sorted(directory.rglob("*"))
                      if path.is_file())


def broker_files(directory: Path) -> bytes:
    """The broker's data files, with the record batches it keeps as JSON arrays of byte values
    (kafka.json) turned back into bytes, so record contents can be searched."""
    chunks = [files_under(directory)]

    def walk(value):
        if isinstance(value, list):
            if len(value) > 8 and all(isinstance(item, int) and 0 <= item < 256 for item in value):
                chunks.append(bytes(value))
                return
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    for path in directory.rglob("*.json"):
        try:
            walk(json.loads(path.read_bytes()))
        except ValueError:
            pass  # written while we read it: the next look sees it whole
    return b"\n".join(chunks)


def database_dump() -> str:
    connection = sqlite3.connect(settings.DATABASES["default"]["TEST"]["NAME"])
    try:
        return "\n".join(connection.iterdump())
    finally:
        connection.close()


def hits(text: str | bytes, value: str) -> list[str]:
    """The names of the forms of `value` found in `text`."""
    forms = {**encoded_forms(value), "html": html.escape(value)}
    if isinstance(text, bytes):
        return [name for name, form in forms.items() if form.encode() in text]
    return [name for name, form in forms.items() if form in text]


def test_a_planted_secret_appears_nowhere(kafka, kafka_broker, live_server, echo_server, monkeypatch):  # noqa: F811
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse
    from rest_framework.authtoken.models import Token

    from designer import services

    secret = f"s3/{random.token_urlsafe(12)}+&\"<'"
    canary = f"canary-{random.token_hex(8)}"
    monkeypatch.setenv(SECRET_NAME, secret)  # the runner inherits the test's environment
    monkeypatch.setenv("SLUICE_HANDLER_MODULES", "demo.handlers,tests.leaky_handlers")

    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "leak-check-horse")
    token = Token.objects.create(user=user).key
    browser = Client()
    browser.force_login(user)
    cookie = {"sessionid": browser.cookies["sessionid"].value}
    api = {"Authorization": f"Token {token}"}

    tag = uuid.uuid4().hex[:6]
    for name, step in workflows(echo_server).items():
        version = services.create_workflow(one_step(f"{name}-{tag}", step), user)
        services.publish(version.workflow, None, user)

    history = HistoryLog(kafka)
    runner = ManageProcess("runner", "--instance-id", f"leak-{tag}")
    bridge = ManageProcess("bridge")
    outputs = []
    try:
        run_ids = {}
        for name in workflows(echo_server):
            run_input = {"canary": canary}
            if name == "data-marker":
                run_input["name"] = f"«secret:{SECRET_NAME}»"
            response = httpx.post(f"{live_server.url}/api/workflows/{name}-{tag}/runs/", json={"input": run_input},
                                  headers=api, timeout=30)
            assert response.status_code == 202, response.text
            run_ids[name] = response.json()["id"]
        history.wait_finished(run_ids.values(), timeout=120)

        def projected() -> dict[str, dict]:
            runs = {name: httpx.get(f"{live_server.url}/api/runs/{run_id}/", headers=api, timeout=30).json()
                    for name, run_id in run_ids.items()}
            return runs if all(run.get("status") in ("succeeded", "failed") for run in runs.values()) else {}

        deadline = time.monotonic() + 90
        while not (runs := projected()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert runs, "the bridge did not project every run"
    finally:
        outputs.append(runner.stop())
        outputs.append(bridge.stop())
        history.close()

    # Each path did what it should, with the secret really used where a step asked for it.
    step = {name: run["steps"][0] for name, run in runs.items()}
    assert runs["echo"]["status"] == "succeeded" and step["echo"]["output"] == {"secret": "«secret»", "canary": canary}
    assert f"Bearer {secret}" in EchoHandler.received
    assert step["http-echo"]["output"]["body"]["authorization"] == "Bearer «secret»"
    assert step["http-echo"]["output"]["headers"]["x-echo-authorization"] == "Bearer «secret»"
    assert runs["http-fail"]["status"] == "failed" and "answered 500" in step["http-fail"]["error"]
    assert step["data-marker"]["output"] == {"canary": canary, "name": f"«secret:{SECRET_NAME}»"}
    assert step["raises"]["error"].startswith("RuntimeError: could not use {'s': '«secret»'}\n\nTraceback")
    assert runs["logs"]["status"] == "succeeded"
    assert step["missing"]["error"] == "secret 'SLUICE_TEST_NOT_SET_ANYWHERE' is not set in this runner's environment"

    # Where Sluice writes, the canary is found and the secret is not, in any form.
    api_json = json.dumps(runs) + httpx.get(f"{live_server.url}/api/runs/?page_size=100", headers=api, timeout=30).text
    pages = "".join(httpx.get(live_server.url + reverse("monitor:run_detail", args=[run_id]), cookies=cookie,
                              timeout=30).text for run_id in run_ids.values())
    assert "«secret»" in pages
    records = raw_records(settings.SLUICE_TOPIC_PREFIX)
    dump = database_dump()
    process_output = "\n".join(outputs)
    assert "handler got" in process_output and "inner problem with" in process_output  # leaky.log did log

    # The broker writes its data files a few seconds after a change: wait until the canary is there.
    deadline = time.monotonic() + 30
    while canary.encode() not in (broker_data := broker_files(Path(kafka_broker.data_dir))) \
            and time.monotonic() < deadline:
        time.sleep(1)

    places = {"API JSON": api_json, "run pages": pages, "Kafka records": records, "database dump": dump,
              "data dir files": files_under(Path(settings.DATA_DIR)), "broker files": broker_data,
              "process output": process_output}
    found = {place: hits(text, secret) for place, text in places.items()}
    seen = {place: (canary.encode() if isinstance(text, bytes) else canary) in text for place, text in places.items()}
    print("\nsecret forms found per place (want none):", found)
    print("canary found per place (want all):", seen)
    assert all(seen.values()), seen
    assert found == {place: [] for place in places}
