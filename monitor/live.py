"""Live history fan-out: one Kafka consumer of `wf.history` per web process, to its websockets.

Each web process needs every event (its websockets may watch any run), so the consumer is not
in a consumer group: it assigns itself every partition, starting a little in the past
(LOOKBACK_SECONDS) so the recent-events buffer can bridge the projector's lag on catch-up.
daphne has no ASGI lifespan, so the consumer starts lazily on the first websocket scope, in a
thread that hands each polled batch to the event loop, where one task writes the frames.

On the embedded broker, which answers fetches at once instead of holding them, the consumer
pauses its partitions while nothing new is there, with the runtime's IdleBackoff. The earlier
hand-made back-off (unassign, compare the end offsets with the last record's offset + 1,
reassign) never settled once it had read a transaction: the commit marker takes an offset of
its own, so the end offset always looked newer and the consumer refetched for ever (~25-50% of
a core in an idle web after a burst). IdleBackoff compares with the consumer's position, which
moves past the markers.

Every process runs its own consumer and serves only its own sockets, so the frames do not go
through the channel layer: the fan-out keeps a registry of this process's sockets (per run,
per feed group) and writes to them itself. Through the layer every frame cost a deepcopy, a
task per member (InMemoryChannelLayer.group_send) and a wake-up of the consumer's task; with
Redis, a round trip to deliver to a socket in the same process. 2,000 feed sockets at 500
events/s were a million such messages a second.

Each event is serialised to JSON once per process (not once per socket). Run sockets get one
frame per event (the consumer dedupes by seq against its catch-up and holds the frames that
come during one, see RunHistoryConsumer.deliver). Feed sockets (dashboard, run list:
`/ws/monitor/`) get one `{"type": "history_batch", "events": [...]}` frame per FEED_TICK
holding every event since the last one, in Kafka's order, built once per group and shared by
every socket of that group.

A slow client cannot make this process buffer without bound: daphne never blocks a send, it
queues the bytes in the socket's transport, so before each frame the consumer checks that
backlog (`backlog_bytes`) and closes the socket with CLOSE_TOO_SLOW past MAX_BACKLOG_BYTES. The
browser's live client reconnects; a run page catches up by seq, a feed page refetches its data.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict, deque

from confluent_kafka import OFFSET_END, Consumer, TopicPartition
from django.conf import settings

from orchestrator.runtime import codec
from orchestrator.runtime.kafka import base_config
from orchestrator.runtime.loops import IdleBackoff
from orchestrator.runtime.topics import Topics

log = logging.getLogger(__name__)

PROCESS_TOKEN = uuid.uuid4().hex[:8]
ALL_RUNS_GROUP = f"runs-all.{PROCESS_TOKEN}"
LOOKBACK_SECONDS = 120
BUFFER_PER_RUN = 1000
BUFFERED_RUNS = 5000
_GROUP_SAFE = re.compile(r"^[A-Za-z0-9_.-]{1,60}$")
FEED_TICK = 0.1  # seconds: feed sockets get at most one frame per tick (and group)
FEED_FRAME_EVENTS = 1000  # a burst (the lookback at start) is split into frames of this many
MAX_BACKLOG_BYTES = 2 * 1024 * 1024  # unsent bytes queued for one socket before it is closed
FEED_YIELD_EVERY = 50  # feed sockets written to between two turns of the event loop
CLOSE_TOO_SLOW = 4408  # not in live.js's "refused" set: the client reconnects and catches up


def _safe(name: str) -> str:
    # Channels group names allow only [A-Za-z0-9_.-] and < 100 characters.
    return name if _GROUP_SAFE.fullmatch(name) else hashlib.sha1(name.encode()).hexdigest()


def workflow_group(slug: str) -> str:
    return f"wf.{_safe(slug)}.{PROCESS_TOKEN}"


def event_payload(event) -> dict:
    """A HistoryEvent as the JSON the websockets send (also what catch-up rebuilds from rows)."""
    return codec.to_builtins(event)


def dumps(payload) -> str:
    return json.dumps(payload, separators=(",", ":"))  # ASCII, as send_json: no lone surrogate can break a frame


def event_frame(event_json: str) -> str:
    """The run socket's frame for one event, from the event's JSON text."""
    return '{"type":"history","event":' + event_json + "}"


def batch_frame(event_jsons: list[str]) -> str:
    """The feed socket's frame for several events (in order), from their JSON texts."""
    return '{"type":"history_batch","events":[' + ",".join(event_jsons) + "]}"


def backlog_bytes(send) -> int:
    """Bytes queued but not yet written to a socket's client, or 0 if the server does not say.

    ASGI has no back-pressure and daphne's send never blocks: the bytes wait in the Twisted
    transport. `send` is what the consumer got (channels' session wrapper around daphne's
    `partial(server.handle_reply, protocol)`); walk down to the protocol's transport.
    """
    for _ in range(4):
        if isinstance(send, functools.partial):
            protocol = send.args[0] if send.args else None
            transport = getattr(protocol, "transport", None)
            try:
                pending = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
            except (AttributeError, TypeError):
                return 0
            return max(pending, 0)
        owner = getattr(send, "__self__", None)
        send = getattr(owner, "real_send", None)
        if send is None:
            return 0
    return 0


def entry_payload(entry, run) -> dict:
    """A projected HistoryEntry row in the same shape as a live event."""
    data = {key: value for key, value in (entry.data or {}).items() if not key.startswith("_")}
    return {
        "run_id": run.id, "seq": entry.seq, "kind": entry.kind, "ts": entry.ts.timestamp(),
        "workflow": entry.data.get("_workflow", run.workflow), "version": entry.data.get("_version", run.version),
        "step_id": entry.step_id, "step_type": entry.data.get("_step_type", ""),
        "attempt": entry.data.get("_attempt", 0), "data": data,
    }


class HistoryFanout:
    """Reads `wf.history` in a thread and writes each event to the sockets of its run and feeds."""

    def __init__(self, loop: asyncio.AbstractEventLoop, topics: Topics | None = None,
                 lookback_seconds: float = LOOKBACK_SECONDS):
        self.loop = loop
        self.topics = topics or Topics(settings.SLUICE_TOPIC_PREFIX)
        self.lookback_seconds = lookback_seconds
        self._recent: OrderedDict[str, deque] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.ready = threading.Event()  # set once partitions are assigned and positioned
        self.delivered = 0
        self.undecodable = 0
        self._backoff: IdleBackoff | None = None
        self._thread = threading.Thread(target=self._run, name="sluice-history-fanout", daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> "HistoryFanout":
        """Start the consumer thread and the broadcaster task (call on the server's event loop)."""
        self._outbox: asyncio.Queue = asyncio.Queue()
        self._feed_pending: list[tuple[str, str]] = []  # (workflow, event JSON) since the last tick
        self._feed_flush: asyncio.TimerHandle | None = None
        self._feed_lock = asyncio.Lock()
        self.feed_frames = 0
        self._broadcaster = self.loop.create_task(self._broadcast_forever())
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def recent(self, run_id: str, after_seq: int) -> list[dict]:
        """Buffered events of a run with seq > after_seq (the projector may not have them yet)."""
        with self._lock:
            events = list(self._recent.get(run_id, ()))
        return [event for event in events if event["seq"] > after_seq]

    def _remember(self, payload: dict) -> None:
        with self._lock:
            events = self._recent.get(payload["run_id"])
            if events is None:
                events = self._recent[payload["run_id"]] = deque(maxlen=BUFFER_PER_RUN)
                while len(self._recent) > BUFFERED_RUNS:
                    self._recent.popitem(last=False)
            else:
                self._recent.move_to_end(payload["run_id"])
            events.append(payload)

    def _assign(self, consumer: Consumer) -> list[TopicPartition]:
        metadata = consumer.list_topics(self.topics.history, timeout=10)
        topic = metadata.topics.get(self.topics.history)
        if topic is None or topic.error is not None or not topic.partitions:
            raise RuntimeError(f"topic {self.topics.history} not found")
        since_ms = int((time.time() - self.lookback_seconds) * 1000)
        wanted = [TopicPartition(self.topics.history, p, since_ms) for p in sorted(topic.partitions)]
        try:
            starts = consumer.offsets_for_times(wanted, timeout=10)
        except Exception as exc:  # a broker without ListOffsets-by-time: start at the end
            log.warning("live history: offsets_for_times failed (%s); starting at the end", exc)
            starts = [TopicPartition(tp.topic, tp.partition, OFFSET_END) for tp in wanted]
        # -1 means no record at or after that time: nothing to catch up on that partition.
        starts = [TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
                  for tp in starts]
        consumer.assign(starts)
        return starts

    def _run(self) -> None:
        consumer = Consumer(base_config(**{
            # Never joins or commits: assign() bypasses the group; librdkafka still wants an id
            # (and the idle back-off asks it for committed offsets: there are none).
            "group.id": self.topics.group(f"live.{PROCESS_TOKEN}"),
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
        }))
        # The embedded broker answers fetches at once, so an assigned consumer's fetcher spins;
        # the runtime's back-off pauses the partitions while nothing new is there (see loops.py).
        backoff = self._backoff = IdleBackoff(consumer, self._stop)
        try:
            while not self._stop.is_set():
                try:
                    assignment = self._assign(consumer)
                    break
                except Exception as exc:
                    log.warning("live history: cannot assign %s yet: %s", self.topics.history, exc)
                    self._stop.wait(2)
            else:
                return
            self.ready.set()
            log.info("live history fan-out reading %s (%d partitions)", self.topics.history, len(assignment))
            while not self._stop.is_set():
                # poll() returns on the first record; consume(n, timeout) would wait out its
                # whole timeout unless n records came, adding up to that much latency.
                first = consumer.poll(backoff.timeout(0.2))
                if first is None:
                    backoff.idle()
                    continue
                backoff.busy()
                batch = [first, *consumer.consume(499, timeout=0)]
                payloads = []
                for msg in batch:
                    if msg.error():
                        continue
                    try:
                        payload = event_payload(codec.decode_history(msg.value(), msg.headers()))
                    except (codec.DecodeError, ValueError, TypeError):
                        self.undecodable += 1
                        continue
                    self._remember(payload)
                    payloads.append(payload)
                if payloads:
                    # One queue drained by one task keeps the events in Kafka's order; a task
                    # per batch would let batches overtake each other.
                    self.loop.call_soon_threadsafe(self._outbox.put_nowait, payloads)
        except Exception:
            log.exception("live history fan-out stopped")
        finally:
            consumer.close()

    @property
    def paused(self) -> bool:
        """True while the consumer sits out an idle spell (its partitions paused)."""
        return bool(self._backoff and self._backoff.paused)

    async def _broadcast_forever(self) -> None:
        while True:
            await self._broadcast(await self._outbox.get())

    async def _broadcast(self, payloads: list[dict]) -> None:
        feeds_watching = bool(_feeds)
        for payload in payloads:
            try:
                event_json = dumps(payload)  # once per process, shared by every socket
            except (TypeError, ValueError):
                log.exception("live history: cannot serialise an event of run %s", payload["run_id"])
                continue
            if feeds_watching:
                self._feed_pending.append((payload["workflow"], event_json))
            watchers = _runs.get(payload["run_id"])
            if watchers:
                text = event_frame(event_json)
                for socket in list(watchers):
                    try:
                        await socket.deliver(payload["seq"], text)
                    except Exception:  # one broken socket must not stop the fan-out for everyone else
                        log.exception("live history: delivery failed for run %s", payload["run_id"])
            self.delivered += 1
        if self._feed_pending and self._feed_flush is None:
            self._feed_flush = self.loop.call_later(FEED_TICK, self._start_feed_flush)

    def _start_feed_flush(self) -> None:
        self.loop.create_task(self.flush_feeds())

    async def flush_feeds(self) -> None:
        """Send the events since the last tick to every feed socket, one frame per group."""
        async with self._feed_lock:  # one flush at a time keeps the frames in order
            self._feed_flush = None
            pending, self._feed_pending = self._feed_pending, []
            if not pending:
                return
            by_group: dict[str, list[str]] = {}
            if ALL_RUNS_GROUP in _feeds:
                by_group[ALL_RUNS_GROUP] = [event_json for _workflow, event_json in pending]
            for workflow, event_json in pending:
                group = workflow_group(workflow)
                if group in _feeds:
                    by_group.setdefault(group, []).append(event_json)
            for group, jsons in by_group.items():
                sockets = _feeds.get(group, ())
                for start in range(0, len(jsons), FEED_FRAME_EVENTS):
                    text = batch_frame(jsons[start:start + FEED_FRAME_EVENTS])  # once for all its sockets
                    self.feed_frames += 1
                    for index, socket in enumerate(list(sockets), 1):
                        try:
                            await socket.send_feed_frame(text)
                        except Exception:
                            log.exception("live history: feed send failed")
                        if index % FEED_YIELD_EVERY == 0:
                            # daphne's sends only queue the bytes; the loop writes them. Let it,
                            # instead of holding every socket's copy of the frame at once.
                            await asyncio.sleep(0)


_fanout: HistoryFanout | None = None

# Run sockets of THIS process per run id: objects with `async deliver(seq, text)`.
_runs: dict[str, set] = {}


def watch_run(socket, run_id: str) -> None:
    _runs.setdefault(run_id, set()).add(socket)


def unwatch_run(socket, run_id: str) -> None:
    sockets = _runs.get(run_id)
    if sockets is not None:
        sockets.discard(socket)
        if not sockets:
            _runs.pop(run_id, None)


# Feed sockets of THIS process per group (workflow_group(slug) or ALL_RUNS_GROUP), written to
# directly by flush_feeds(): objects with `async send_feed_frame(text)`.
_feeds: dict[str, set] = {}


def watch_feed(socket, groups) -> None:
    for group in groups:
        _feeds.setdefault(group, set()).add(socket)


def unwatch_feed(socket, groups) -> None:
    for group in groups:
        sockets = _feeds.get(group)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                _feeds.pop(group, None)


def ensure_started() -> HistoryFanout:
    """Start this process's fan-out on first use (call from async code running on the server loop)."""
    global _fanout
    if _fanout is None or not _fanout.alive:
        _fanout = HistoryFanout(asyncio.get_running_loop()).start()
    return _fanout


def current() -> HistoryFanout | None:
    return _fanout
