"""Real websocket connections to a forked daphne (live_server) fed by the real broker's history topic."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from designer.models import Workflow
from monitor.models import Run, WorkflowAccess
from monitor.projector import Projector
from orchestrator import messages
from tests.test_projector import produce_history

pytestmark = [pytest.mark.kafka]


def make_user(username: str, *perms: str) -> User:
    user = User.objects.create_user(username, password="pw-" + uuid.uuid4().hex)
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))
    return user


def session_cookie(user: User) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def make_run(workflow: str) -> Run:
    from django.utils import timezone

    return Run.objects.create(id=uuid.uuid4().hex, workflow=workflow, version=1, created_at=timezone.now())


def events(run: Run, seqs, kind="step_started") -> list[messages.HistoryEvent]:
    return [messages.HistoryEvent(run_id=run.id, seq=seq, kind=kind, ts=time.time(), workflow=run.workflow,
                                  version=1, step_id=f"s{seq}", step_type="transform", attempt=1,
                                  data={"input": {"seq": seq}, "attempt": 1}) for seq in seqs]


def project_before_anyone_watches(kafka, run: Run, upto: int) -> None:
    """Events 1..upto of `run` on the history topic and projected into the database."""
    produce_history(kafka.history, events(run, range(1, upto + 1)))
    projector = Projector(group_id=f"p-{uuid.uuid4().hex[:6]}")
    projector.run_until_idle(idle_seconds=1.0)
    projector.close()


def run_async(coroutine):
    """asyncio.run in a fresh thread: Playwright's sync API may hold a running loop in this one."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def ws(live_server, path: str, cookie: str | None):
    headers = {"Cookie": cookie} if cookie else {}
    return connect(f"{live_server.ws_url}{path}", additional_headers=headers, origin=live_server.url,
                   open_timeout=10)


async def receive_until(socket, predicate, timeout: float = 15.0) -> list[dict]:
    """Messages until one satisfies `predicate` (inclusive)."""
    got = []
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await socket.recv())
            got.append(message)
            if predicate(message):
                return got


async def drain(socket, seconds: float) -> list[dict]:
    """Everything that arrives within `seconds` (for asserting that nothing else does)."""
    got = []
    try:
        async with asyncio.timeout(seconds):
            while True:
                got.append(json.loads(await socket.recv()))
    except TimeoutError:
        return got


async def feed_events(socket, count: int, timeout: float = 15.0) -> tuple[list[dict], int]:
    """The feed's events, flattened from its history_batch frames, until `count` came; and how many frames."""
    got, frames = [], 0
    async with asyncio.timeout(timeout):
        while len(got) < count:
            message = json.loads(await socket.recv())
            assert message["type"] == "history_batch", message
            frames += 1
            got.extend(message["events"])
    return got, frames


@pytest.fixture
def setup(kafka, live_server):
    watcher = make_user("watcher", "monitor.view_run")
    restricted = make_user("restricted")
    alpha = Workflow.objects.create(slug="alpha", name="Alpha")
    Workflow.objects.create(slug="beta", name="Beta")
    WorkflowAccess.objects.create(workflow=alpha, user=restricted)
    return kafka, live_server, watcher, restricted


def test_anonymous_user_is_refused_and_receives_nothing(setup):
    kafka, live_server, _watcher, _restricted = setup
    run = make_run("alpha")

    async def scenario():
        for path in (f"/ws/runs/{run.id}/", "/ws/monitor/"):
            with pytest.raises(InvalidStatus) as refused:
                async with ws(live_server, path, cookie=None) as socket:
                    await socket.recv()
            assert refused.value.response.status_code == 403

    run_async(scenario())


def test_user_only_receives_events_of_workflows_they_may_view(setup):
    kafka, live_server, watcher, restricted = setup
    alpha_run, beta_run = make_run("alpha"), make_run("beta")
    restricted_cookie, watcher_cookie = session_cookie(restricted), session_cookie(watcher)

    async def scenario():
        # A run of a workflow they may not see: refused at the handshake.
        with pytest.raises(InvalidStatus) as refused:
            async with ws(live_server, f"/ws/runs/{beta_run.id}/", restricted_cookie):
                pass
        assert refused.value.response.status_code == 403
        with pytest.raises(InvalidStatus):
            async with ws(live_server, "/ws/monitor/?workflow=beta", restricted_cookie):
                pass

        async with ws(live_server, "/ws/monitor/", restricted_cookie) as limited, \
                ws(live_server, "/ws/monitor/", watcher_cookie) as everything:
            produce_history(kafka.history, events(beta_run, [1, 2]) + events(alpha_run, [1, 2]))
            seen_all, _frames = await feed_events(everything, 4)
            seen_limited, _frames = await feed_events(limited, 2)
            for frame in await drain(limited, 1.5):
                seen_limited += frame["events"]
        assert sorted(e["run_id"] for e in seen_all) == sorted([beta_run.id] * 2 + [alpha_run.id] * 2)
        assert {e["run_id"] for e in seen_limited} == {alpha_run.id}
        assert [e["seq"] for e in seen_limited] == [1, 2]

    run_async(scenario())


def test_catch_up_after_reconnect_has_no_gaps_and_no_duplicates(setup):
    kafka, live_server, watcher, _restricted = setup
    run = make_run("alpha")
    cookie = session_cookie(watcher)
    project_before_anyone_watches(kafka, run, upto=5)
    assert Run.objects.get(id=run.id).last_seq == 5

    async def scenario():
        async with ws(live_server, f"/ws/runs/{run.id}/?since=2", cookie) as socket:
            first = await receive_until(socket, lambda m: m["type"] == "caught_up")
            produce_history(kafka.history, events(run, range(6, 9)))
            live_events = await receive_until(socket, lambda m: m.get("event", {}).get("seq") == 8)
        # Disconnected: 9-11 happen (the projector is not running, so only the live buffer has them).
        produce_history(kafka.history, events(run, range(9, 12)))
        await asyncio.sleep(1.5)
        async with ws(live_server, f"/ws/runs/{run.id}/?since=8", cookie) as socket:
            second = await receive_until(socket, lambda m: m["type"] == "caught_up")
            second += await drain(socket, 1.0)
            # Asking again explicitly (e.g. after the page noticed a gap) replays from there.
            await socket.send(json.dumps({"type": "catch_up", "since": 10}))
            again = await receive_until(socket, lambda m: m["type"] == "caught_up")
            await socket.send(json.dumps({"type": "catch_up", "since": "x"}))
            error = json.loads(await socket.recv())
        return first, live_events, second, again, error

    first, live_events, second, again, error = run_async(scenario())
    assert [m["event"]["seq"] for m in first[:-1]] == [3, 4, 5]
    assert first[-1] == {"type": "caught_up", "seq": 5}
    assert first[0]["event"]["data"] == {"input": {"seq": 3}, "attempt": 1}
    assert first[0]["event"]["step_id"] == "s3" and first[0]["event"]["workflow"] == "alpha"
    assert [m["event"]["seq"] for m in live_events] == [6, 7, 8]
    assert [m["event"]["seq"] for m in second if m["type"] == "history"] == [9, 10, 11]
    assert second[3] == {"type": "caught_up", "seq": 11}
    # Every seq from 3 to 11 exactly once across both connections.
    all_seqs = [m["event"]["seq"] for m in first + live_events + second if m["type"] == "history"]
    assert all_seqs == list(range(3, 12))
    assert [m.get("event", {}).get("seq") for m in again] == [11, None] and again[-1]["seq"] == 11
    assert error["type"] == "error" and "since" in error["error"]


def test_feed_socket_gets_every_event_once_in_order_across_batches(setup):
    kafka, live_server, watcher, _restricted = setup
    runs = [make_run("alpha"), make_run("beta"), make_run("alpha")]
    cookie = session_cookie(watcher)

    async def scenario():
        async with ws(live_server, "/ws/monitor/", cookie) as feed, \
                ws(live_server, "/ws/monitor/?workflow=alpha", cookie) as alpha_feed:
            await asyncio.sleep(0.5)  # both registered with the fan-out
            # Five bursts a few ticks apart, each interleaving the three runs.
            for first in range(1, 51, 10):
                burst = []
                for seq in range(first, first + 10):
                    for run in runs:
                        burst += events(run, [seq])
                produce_history(kafka.history, burst)
                await asyncio.sleep(0.3)
            everything, frames = await feed_events(feed, 150)
            alpha, _alpha_frames = await feed_events(alpha_feed, 100)
            for frame in await drain(feed, 1.0):
                everything += frame["events"]
            for frame in await drain(alpha_feed, 0.5):
                alpha += frame["events"]
        return everything, frames, alpha

    everything, frames, alpha = run_async(scenario())
    assert frames > 1, "the events came in several batches"
    assert len(everything) == 150
    for run in runs:  # each run's events exactly once, in order, across the batches
        assert [e["seq"] for e in everything if e["run_id"] == run.id] == list(range(1, 51))
    assert len(alpha) == 100 and {e["workflow"] for e in alpha} == {"alpha"}
    for run in (runs[0], runs[2]):
        assert [e["seq"] for e in alpha if e["run_id"] == run.id] == list(range(1, 51))
    assert everything[0]["data"] == {"input": {"seq": 1}, "attempt": 1}


@pytest.fixture
def small_backlog(monkeypatch):
    """Before live_server: its daphne is forked from this process and inherits the limit."""
    from monitor import live

    monkeypatch.setattr(live, "MAX_BACKLOG_BYTES", 512 * 1024)


def test_a_feed_client_that_stops_reading_is_closed_and_the_others_get_everything(small_backlog, setup):
    import socket as sockets

    kafka, live_server, watcher, _restricted = setup
    run = make_run("alpha")
    cookie = session_cookie(watcher)
    big = "x" * 2_000

    def bulky(seqs):
        return [messages.HistoryEvent(run_id=run.id, seq=seq, kind="step_succeeded", ts=time.time(),
                                      workflow="alpha", version=1, step_id="s", step_type="transform",
                                      attempt=1, data={"output": big}) for seq in seqs]

    async def scenario():
        # A client that reads nothing, with a tiny receive window, so the bytes pile up in daphne.
        raw = sockets.socket()
        raw.setsockopt(sockets.SOL_SOCKET, sockets.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", live_server.port))
        async with ws(live_server, "/ws/monitor/", cookie) as reader, \
                connect(f"{live_server.ws_url}/ws/monitor/", additional_headers={"Cookie": cookie},
                        origin=live_server.url, sock=raw, max_queue=1, open_timeout=10) as stalled:
            await asyncio.sleep(0.5)
            for first in range(1, 3001, 100):  # 6 MB in all; in a thread, so that `reader` keeps reading
                await asyncio.to_thread(produce_history, kafka.history, bulky(range(first, first + 100)))
            got, _frames = await feed_events(reader, 3000, timeout=90)
            await asyncio.sleep(1.0)
            # Now read what the stalled one was sent: some frames, then the close for being too slow.
            stalled_events = []
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(30):
                    while True:
                        stalled_events += json.loads(await stalled.recv())["events"]
        return got, stalled_events, closed.value

    got, stalled_events, closed = run_async(scenario())
    assert [e["seq"] for e in got] == list(range(1, 3001))
    # Closed with 4408 behind its backlog; if it still has not read that far when the server's
    # close handshake times out, the server drops the connection (1006). Either way it is gone.
    assert closed.rcvd is None or closed.rcvd.code == 4408
    assert len(stalled_events) < 3000
    # What it did get came in order, without gaps: after reconnecting it would refetch the rest.
    assert [e["seq"] for e in stalled_events] == list(range(1, len(stalled_events) + 1))


def test_run_sockets_joining_while_events_flow_see_every_seq_once_in_order(setup):
    """Live frames that arrive during a socket's catch-up are held and sent after it, deduped."""
    import threading

    kafka, live_server, watcher, _restricted = setup
    run = make_run("alpha")
    cookie = session_cookie(watcher)
    project_before_anyone_watches(kafka, run, upto=5)

    def keep_producing():
        for first in range(6, 301, 5):
            produce_history(kafka.history, events(run, range(first, first + 5)))
            time.sleep(0.01)

    async def watch(delay: float) -> list[dict]:
        await asyncio.sleep(delay)
        async with ws(live_server, f"/ws/runs/{run.id}/?since=2", cookie) as socket:
            return await receive_until(socket, lambda m: m.get("event", {}).get("seq") == 300, timeout=60)

    async def scenario():
        async with ws(live_server, "/ws/monitor/", cookie):  # the fan-out is up before events flow
            await asyncio.sleep(1.0)
            producer = threading.Thread(target=keep_producing)
            producer.start()
            try:
                return await asyncio.gather(*(watch(delay) for delay in (0.0, 0.1, 0.2, 0.35, 0.5, 0.8)))
            finally:
                await asyncio.to_thread(producer.join)

    for messages_seen in run_async(scenario()):
        seqs = [m["event"]["seq"] for m in messages_seen if m["type"] == "history"]
        assert seqs == list(range(3, 301)), seqs[:20]
        assert sum(1 for m in messages_seen if m["type"] == "caught_up") == 1
