"""The web's history fan-out consumer against the real embedded broker: it idles and still delivers.

The embedded broker answers fetches at once instead of holding them until data arrives, so a
consumer with live partitions refetches in a tight loop. The fan-out must pause while nothing is
new (also after it has read transactions, whose commit markers take offsets of their own) and
deliver the next event that comes.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from monitor import live
from monitor.channel_layer import SweepingInMemoryChannelLayer
from orchestrator import messages
from tests.runtime_support import produce_history_in_transaction
from tests.test_websocket_monitor import run_async

pytestmark = [pytest.mark.kafka]


def history(run_id: str, seqs) -> list[messages.HistoryEvent]:
    return [messages.HistoryEvent(run_id=run_id, seq=seq, kind="step_started", ts=time.time(), workflow="alpha",
                                  version=1, step_id=f"s{seq}", step_type="transform", attempt=1, data={})
            for seq in seqs]



async def until(predicate, what: str, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)
    assert predicate(), what


class FakeRunSocket:
    """Stands in for a run page's consumer: records what the fan-out delivers to it."""

    def __init__(self):
        self.frames: asyncio.Queue = asyncio.Queue()

    async def deliver(self, seq: int, text: str) -> None:
        self.frames.put_nowait((seq, text))


async def receive_seqs(socket: FakeRunSocket, count: int, timeout: float = 30.0) -> list[int]:
    seqs = []
    async with asyncio.timeout(timeout):
        while len(seqs) < count:
            seq, text = await socket.frames.get()
            # Serialised once by the fan-out; the seq rides beside the text for the run socket's dedupe.
            frame = json.loads(text)
            assert frame["type"] == "history" and frame["event"]["seq"] == seq
            seqs.append(seq)
    return seqs


def test_fanout_pauses_when_quiet_and_delivers_the_next_event(kafka):
    run_id = uuid.uuid4().hex

    async def scenario():
        socket = FakeRunSocket()
        live.watch_run(socket, run_id)
        fanout = live.HistoryFanout(asyncio.get_running_loop(), topics=kafka, lookback_seconds=0).start()
        try:
            await until(fanout.ready.is_set, "the fan-out assigned its partitions")
            produce_history_in_transaction(kafka.history, history(run_id, [1, 2, 3]))
            first = await receive_seqs(socket, 3)
            # Quiet now: once past the commit marker the consumer pauses instead of refetching.
            await until(lambda: fanout.paused, "the fan-out paused after a quiet spell")
            produce_history_in_transaction(kafka.history, history(run_id, [4]))
            after_pause = await receive_seqs(socket, 1)
            await until(lambda: fanout.paused, "the fan-out paused again")
            return first, after_pause
        finally:
            fanout.stop()
            live.unwatch_run(socket, run_id)

    first, after_pause = run_async(scenario())
    assert first == [1, 2, 3]
    assert after_pause == [4]


# ---- the channel layer: Channels' layer contract, public API only ---------------------------
def test_the_channel_layer_overrides_nothing_private_of_channels():
    """It implements the public layer contract on BaseChannelLayer: no private Channels method
    is overridden or called, so a Channels release that renames one cannot silently undo the
    once-a-second sweep (the reason the class exists)."""
    import inspect

    from channels.layers import BaseChannelLayer, InMemoryChannelLayer

    assert SweepingInMemoryChannelLayer.__mro__[1] is BaseChannelLayer
    assert not issubclass(SweepingInMemoryChannelLayer, InMemoryChannelLayer)
    private_of_channels = {name for klass in (BaseChannelLayer, InMemoryChannelLayer) for name in vars(klass)
                           if name.startswith("_") and not name.startswith("__")}
    assert not private_of_channels & set(vars(SweepingInMemoryChannelLayer))
    source = inspect.getsource(inspect.getmodule(SweepingInMemoryChannelLayer))
    assert not [name for name in private_of_channels if f".{name}(" in source]
    # The public helpers it relies on are there.
    for name in ("require_valid_channel_name", "require_valid_group_name", "get_capacity"):
        assert callable(getattr(BaseChannelLayer, name)), name


def test_the_channel_layer_keeps_the_contract():
    from channels.exceptions import ChannelFull

    async def scenario():
        layer = SweepingInMemoryChannelLayer(capacity=2)
        assert set(layer.extensions) == {"groups", "flush"}
        one, two = await layer.new_channel(), await layer.new_channel()
        assert one != two and "!" in one
        await layer.send(one, {"type": "a", "n": 1})
        await layer.send(one, {"type": "a", "n": 2})
        with pytest.raises(ChannelFull):
            await layer.send(one, {"type": "a", "n": 3})
        assert [(await layer.receive(one))["n"] for _ in range(2)] == [1, 2]
        # A receiver waits for the message that arrives later; the message is a copy.
        message = {"type": "a", "n": 4}
        waiting = asyncio.create_task(layer.receive(two))
        await asyncio.sleep(0)
        await layer.send(two, message)
        message["n"] = 99
        assert (await asyncio.wait_for(waiting, 1))["n"] == 4
        # Groups: every member gets it, a full member misses it, a discarded one gets nothing.
        for channel in (one, two):
            await layer.group_add("run.r1", channel)
        await layer.send(two, {"type": "fill"})
        await layer.send(two, {"type": "fill"})
        await layer.group_send("run.r1", {"type": "event"})
        assert (await layer.receive(one))["type"] == "event"
        assert [(await layer.receive(two))["type"] for _ in range(2)] == ["fill", "fill"]
        await layer.group_discard("run.r1", one)
        await layer.group_send("run.r1", {"type": "again"})
        assert (await layer.receive(two))["type"] == "again"
        assert not layer.channels.get(one)
        # A cancelled receive leaves nothing behind; flush empties the layer.
        waiting = asyncio.create_task(layer.receive(one))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert one not in layer.channels
        await layer.flush()
        assert layer.channels == {} and layer.groups == {}

    run_async(scenario())


def test_the_channel_layer_sweeps_at_most_once_a_second_and_still_expires(monkeypatch):
    """The reason for the class: no full sweep on every message, but expiry still happens
    (an expired message drops its channel from every group: its consumer is gone)."""
    clock = {"now": 1000.0}
    monkeypatch.setattr("monitor.channel_layer.time.monotonic", lambda: clock["now"])
    monkeypatch.setattr("monitor.channel_layer.time.time", lambda: clock["now"])

    async def scenario():
        layer = SweepingInMemoryChannelLayer(expiry=60, capacity=10_000)
        gone, alive = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("wf.orders", gone)
        await layer.group_add("wf.orders", alive)
        for _ in range(500):
            await layer.group_send("wf.orders", {"type": "event"})
        assert layer.sweeps == 1
        for _ in range(500):
            await layer.receive(alive)
        clock["now"] += 1.5
        await layer.send(alive, {"type": "ping"})
        assert layer.sweeps == 2
        clock["now"] += 61
        await layer.send(alive, {"type": "ping"})  # due: the sweep drops `gone`'s old messages
        assert layer.sweeps == 3
        assert gone not in layer.channels and gone not in layer.groups.get("wf.orders", {})
        assert alive not in layer.groups.get("wf.orders", {})  # its first ping expired unread too
        clock["now"] += 86_401
        fresh = await layer.new_channel()
        await layer.group_add("wf.other", fresh)
        layer.groups.setdefault("wf.old", {})[gone] = clock["now"] - 86_402  # joined over group_expiry ago
        layer.sweep()
        assert "wf.old" not in layer.groups and fresh in layer.groups["wf.other"]

    run_async(scenario())


class FakeFeedSocket:
    """Stands in for a feed consumer: records the frames the fan-out writes to it."""

    def __init__(self):
        self.frames: list[str] = []

    async def send_feed_frame(self, text: str) -> None:
        self.frames.append(text)


def test_feed_frames_are_built_once_per_tick_and_shared_by_every_socket(kafka, monkeypatch):
    monkeypatch.setattr(live, "FEED_TICK", 0.05)
    run_a, run_b = uuid.uuid4().hex, uuid.uuid4().hex
    sockets = [FakeFeedSocket() for _ in range(3)]

    async def scenario():
        fanout = live.HistoryFanout(asyncio.get_running_loop(), topics=kafka, lookback_seconds=0).start()
        for socket in sockets:
            live.watch_feed(socket, [live.ALL_RUNS_GROUP])
        try:
            await until(fanout.ready.is_set, "the fan-out assigned its partitions")
            for first in range(1, 40, 10):  # four transactions, apart: several ticks
                produce_history_in_transaction(kafka.history, history(run_a, range(first, first + 10))
                                       + history(run_b, range(first, first + 10)))
                await asyncio.sleep(0.2)

            def events_seen():
                return [e for f in sockets[0].frames for e in json.loads(f)["events"]]
            await until(lambda: len(events_seen()) >= 80, "every event reached the feed")
            await asyncio.sleep(0.3)  # nothing more comes
        finally:
            fanout.stop()
            for socket in sockets:
                live.unwatch_feed(socket, [live.ALL_RUNS_GROUP])

    run_async(scenario())
    frames = sockets[0].frames
    assert len(frames) >= 2, "events spread over several ticks come in several frames"
    assert sockets[1].frames == frames and sockets[2].frames == frames
    # Built once per tick: every socket got the very same string object.
    assert all(a is b for a, b in zip(frames, sockets[1].frames))
    events = [e for f in frames for e in json.loads(f)["events"]]
    assert all(json.loads(f)["type"] == "history_batch" for f in frames)
    for run_id in (run_a, run_b):
        assert [e["seq"] for e in events if e["run_id"] == run_id] == list(range(1, 41))
    assert len(events) == 80
