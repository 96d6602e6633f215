"""The history projector: folds `wf.history` (plus `wf.dlq` and `wf.heartbeats`) into database rows.

It reads in its own consumer group (the topic prefix + "projector", e.g. "wf.projector"),
applies each polled batch in ONE database transaction and commits the Kafka offsets only
after the database commit. A crash between the two replays the batch, which is harmless:
every history event carries a per-run `seq`, Run.last_seq remembers the last one folded in,
and an event at or below it changes nothing. At-least-once delivery plus idempotent
application is effectively-once, and replaying the whole topic into a fresh group leaves
identical rows.

`python manage.py bridge` runs `Projector.run_forever()`; tests use `run_until_idle()`.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
from collections import defaultdict, namedtuple
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache

import msgspec
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError, transaction

from orchestrator import messages
from orchestrator.runtime import codec
from orchestrator.runtime.kafka import base_config, consumer_config, resting_fetcher
from orchestrator.runtime.loops import IdleBackoff
from orchestrator.runtime.topics import Topics, ensure_topics

from . import alerts, dead_letters, metrics
from .upsert import load, new_row, upsert
from .models import DeadLetter, HistoryEntry, Run, RunnerProcess, RunStatus, StepRun, StepStatus

log = logging.getLogger(__name__)

GROUP_ROLE = "projector"  # the group id is Topics.group(GROUP_ROLE): scoped by the topic prefix
# The group of releases before group ids carried the prefix: its offsets are adopted once.
LEGACY_GROUP_ID = "sluice-projector"
BATCH_SIZE = 2000
# Joining the group and resolving the start offsets takes a moment; run_until_idle() does not
# count that as idleness.
ASSIGNMENT_GRACE_SECONDS = 2.0

_heartbeat_decoder = msgspec.json.Decoder(messages.RunnerHeartbeat)

# A HistoryEntry row as upsert() takes it: building model instances cost more than storing them.
HistoryRow = namedtuple("HistoryRow", "run_id seq kind step_id ts data")


# The engine stamps every event of one decision batch with the same time, so a batch of history
# holds few distinct times, each converted many times over (event, step and run times, attempts):
# remembered, not recomputed. Datetimes are immutable; the caches are bounded.
@lru_cache(maxsize=4096)
def from_epoch(value) -> datetime | None:
    if value is None:
        return None
    return datetime.fromtimestamp(float(value), tz=timezone.utc)


@lru_cache(maxsize=4096)
def _iso(value) -> str | None:
    moment = from_epoch(value)
    return moment.isoformat() if moment else None


@dataclass
class ProjectorStats:
    applied: int = 0  # history events folded into rows
    skipped: int = 0  # duplicates: seq at or below the run's last_seq
    undecodable: int = 0  # history or heartbeat records that did not match their schema
    dead_letters: int = 0
    heartbeats: int = 0
    batches: int = 0
    alerts_queued: int = 0  # failure notifications queued (monitor/alerts.py)
    set_aside: int = 0  # records the database refused, kept as dead letters (Projector._set_aside)
    last_error: str = ""
    by_kind: dict = field(default_factory=lambda: defaultdict(int))

    def add(self, other: ProjectorStats) -> None:
        """Count in what a batch applied, once its transaction committed."""
        for name in ("applied", "skipped", "dead_letters", "heartbeats", "alerts_queued"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for kind, count in other.by_kind.items():
            self.by_kind[kind] += count


# ---- folding one history event into a run and its steps ------------------------------------
def _attempt_entry(step: StepRun, number: int) -> dict:
    """The attempts-list entry for attempt `number`, appended in order if it is new."""
    for entry in step.attempts:
        if entry.get("attempt") == number:
            return entry
    entry = {"attempt": number, "started_at": None, "ended_at": None, "error": None, "backoff_seconds": None}
    step.attempts.append(entry)
    step.attempts.sort(key=lambda item: item.get("attempt") or 0)
    return entry


def _fold_run(run: Run, event: messages.HistoryEvent) -> None:
    data = event.data or {}
    kind = event.kind
    if kind == "run_started":
        # The column is not nullable; a run started without input has input {} (as the API does).
        run.input = data["input"] if data.get("input") is not None else {}
        run.trigger = data.get("trigger") or {}
        run.started_by = data.get("started_by") or ""
        run.created_at = from_epoch(data.get("created_at")) or from_epoch(event.ts)
        run.started_at = from_epoch(event.ts)
        run.status = RunStatus.RUNNING
    elif kind == "run_succeeded":
        run.status = RunStatus.SUCCEEDED
        run.output = data.get("output")
        run.ended_at = from_epoch(event.ts)
    elif kind == "run_failed":
        run.status = RunStatus.FAILED
        run.error = data.get("error") or ""
        run.ended_at = from_epoch(event.ts)
    elif kind == "run_cancelled":
        run.status = RunStatus.CANCELLED
        who = f" by {data['by']}" if data.get("by") else ""
        run.error = f"cancelled{who}" + (f": {data['reason']}" if data.get("reason") else "")
        run.ended_at = from_epoch(event.ts)
    elif kind == "run_retried":
        run.status = RunStatus.RUNNING
        run.error = ""
        run.output = None
        run.ended_at = None


def _fold_step(step: StepRun, event: messages.HistoryEvent) -> None:
    data = event.data or {}
    kind = event.kind
    attempt_number = event.attempt or data.get("attempt") or 0
    if event.step_type:
        step.type = event.step_type
    if kind == "step_started":
        step.status = StepStatus.RUNNING
        step.input = data.get("input")
        step.error = ""
        step.ended_at = None
        step.started_at = step.started_at or from_epoch(event.ts)
        entry = _attempt_entry(step, attempt_number)
        entry["started_at"] = _iso(event.ts)
    elif kind in ("step_succeeded", "step_failed"):
        entry = _attempt_entry(step, attempt_number)
        entry["started_at"] = _iso(data.get("started_at")) or entry["started_at"]
        entry["ended_at"] = _iso(data.get("ended_at")) or _iso(event.ts)
        step.ended_at = from_epoch(data.get("ended_at")) or from_epoch(event.ts)
        step.started_at = step.started_at or from_epoch(data.get("started_at"))
        if kind == "step_succeeded":
            step.status = StepStatus.SUCCEEDED
            step.output = data.get("output")
            step.port = data.get("port") or ""
            step.error = ""
        else:
            step.status = StepStatus.FAILED
            step.error = data.get("error") or ""
            entry["error"] = step.error
    elif kind == "step_retrying":
        step.status = StepStatus.RETRYING
        step.error = data.get("error") or ""
        entry = _attempt_entry(step, attempt_number)
        entry["ended_at"] = entry["ended_at"] or _iso(event.ts)
        entry["error"] = step.error
        entry["backoff_seconds"] = data.get("backoff_seconds")
        entry["next_attempt_at"] = _iso(data.get("next_attempt_at"))
    elif kind == "step_waiting":
        step.status = StepStatus.WAITING
        step.started_at = step.started_at or from_epoch(event.ts)
    elif kind == "step_skipped":
        step.status = StepStatus.SKIPPED
    elif kind == "step_cancelled":
        step.status = StepStatus.CANCELLED
        step.ended_at = step.ended_at or from_epoch(event.ts)


def _history_data(event: messages.HistoryEvent) -> dict:
    """What the raw history log keeps for an event: its data plus the fields the log shows."""
    return {**(event.data or {}), "_attempt": event.attempt, "_step_type": event.step_type,
            "_workflow": event.workflow, "_version": event.version}


def apply_history(events: list[messages.HistoryEvent], stats: ProjectorStats | None = None) -> ProjectorStats:
    """Fold a batch of history events into Run, StepRun and HistoryEntry rows in one transaction.

    Events of one run are applied in seq order; any at or below the run's last_seq are skipped,
    which is what makes a replay (or an at-least-once redelivery) change nothing.
    """
    stats = stats or ProjectorStats()
    if not events:
        return stats
    by_run: dict[str, list[messages.HistoryEvent]] = defaultdict(list)
    for event in events:
        by_run[event.run_id].append(event)

    with transaction.atomic():
        runs = {run.id: run for run in load(Run, "id", by_run)}
        # Only runs that have a row can have step rows (a foreign key): in a burst most of a
        # batch's runs are new, and asking for their steps was a fifth of the loading.
        steps = {(step.run_id, step.step_id): step for step in load(StepRun, "run", runs)}
        new_runs, changed_runs, new_steps, changed_steps, entries = {}, set(), {}, set(), []
        failures = []  # (run, run_failed event) folded now: the alerts to queue
        for run_id, run_events in by_run.items():
            run = runs.get(run_id)
            for event in sorted(run_events, key=lambda item: item.seq):
                if run is not None and event.seq <= run.last_seq:
                    stats.skipped += 1
                    continue
                if run is None:
                    # First event seen for this run (normally run_started; after a retention gap
                    # anything): the row starts from what the event says.
                    run = new_row(Run, id=run_id, workflow=event.workflow, version=event.version,
                                  created_at=from_epoch(event.ts), status=RunStatus.RUNNING)
                    runs[run_id] = run
                    new_runs[run_id] = run
                elif run_id not in new_runs:
                    changed_runs.add(run_id)
                if event.seq != run.last_seq + 1 and run.last_seq:
                    log.warning("run %s: history seq jumped from %d to %d", run_id, run.last_seq, event.seq)
                _fold_run(run, event)
                if event.step_id:
                    key = (run_id, event.step_id)
                    step = steps.get(key)
                    if step is None:
                        step = new_row(StepRun, run_id=run_id, step_id=event.step_id, type=event.step_type,
                                       attempts=[])
                        steps[key] = step
                        new_steps[key] = step
                    elif key not in new_steps:
                        changed_steps.add(key)
                    _fold_step(step, event)
                run.last_seq = event.seq
                if event.kind == "run_failed":
                    failures.append((run, event))
                entries.append(HistoryRow(run_id=run_id, seq=event.seq, kind=event.kind,
                                          step_id=event.step_id, ts=from_epoch(event.ts),
                                          data=_history_data(event)))
                stats.applied += 1
                stats.by_kind[event.kind] += 1

        # One upsert per table and batch for the new and the changed rows alike (monitor/upsert.py:
        # bulk_update's CASE WHEN per field and row, then the ORM's compiler, were most of a batch).
        upsert(Run, [*new_runs.values(), *(runs[run_id] for run_id in changed_runs)], conflict=["id"],
               update=["workflow", "version", "status", "input", "output", "error", "trigger", "started_by",
                       "created_at", "started_at", "ended_at", "last_seq"])
        upsert(StepRun, [*new_steps.values(), *(steps[key] for key in changed_steps)], conflict=["run", "step_id"],
               update=["type", "status", "attempts", "input", "output", "error", "port", "started_at", "ended_at"])
        # No update: a row for this (run, seq) can exist only from an earlier apply of the very
        # same event.
        upsert(HistoryEntry, entries, conflict=["run", "seq"])
        # In the same transaction: a failure is queued exactly when it is first projected.
        stats.alerts_queued += alerts.queue_failures(failures)
    return stats


# ---- dead letters and heartbeats ------------------------------------------------------------
def _text(raw: bytes | None) -> str:
    """Bytes as text a database column holds: UTF-8 as it is, anything else (and text with NUL
    characters, which PostgreSQL cannot store) as "base64:..." (dead_letters.raw_bytes reverses it)."""
    if raw is None:
        return ""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        return "base64:" + base64.b64encode(raw).decode()
    return text


# PostgreSQL's text and jsonb cannot hold the NUL character: one in a record would fail its batch
# on every try. The monitor's tables show it as U+FFFD, the replacement character, on every
# database (the same rows on both); the record on its topic keeps it. In JSON a NUL can only be
# the escape \u0000 after an even run of backslashes (a raw zero byte is not valid JSON).
_NUL_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def without_nul(value: bytes | None) -> bytes | None:
    """A JSON record with every NUL character replaced by U+FFFD (most records: as they are)."""
    if not value or b"\\u0000" not in value:
        return value
    return _NUL_ESCAPE.sub(rb"\1\\ufffd", value)


def _stored_headers(msg) -> dict[str, str]:
    """A record's headers as a JSON object a database holds: values as `_text` makes them (the
    client already ends a header's name at its first NUL)."""
    return {name: _text(value) for name, value in (msg.headers() or [])}


def dead_letter_from_message(msg) -> DeadLetter:
    headers = _stored_headers(msg)

    def as_int(name):
        try:
            return int(headers[name])
        except (KeyError, ValueError):
            return None

    try:
        failed_at = from_epoch(float(headers[messages.DLQ_FAILED_AT]))
    except (KeyError, ValueError):
        failed_at = from_epoch(msg.timestamp()[1] / 1000) if msg.timestamp()[1] > 0 else from_epoch(time.time())
    letter = DeadLetter(
        topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
        key=_text(msg.key()), value=_text(msg.value()), headers=headers,
        error=headers.get(messages.DLQ_ERROR, ""), stage=headers.get(messages.DLQ_STAGE, ""),
        source_topic=headers.get(messages.DLQ_SOURCE_TOPIC, ""),
        source_partition=as_int(messages.DLQ_SOURCE_PARTITION),
        source_offset=as_int(messages.DLQ_SOURCE_OFFSET),
        failed_at=failed_at,
    )
    # Who may see and handle it follows from its workflow (monitor.permissions).
    letter.workflow = dead_letters.attribute(letter)
    return letter


def apply_heartbeats(beats: list[messages.RunnerHeartbeat]) -> None:
    latest: dict[str, messages.RunnerHeartbeat] = {}
    for beat in beats:
        if beat.instance not in latest or beat.ts >= latest[beat.instance].ts:
            latest[beat.instance] = beat
    for beat in latest.values():
        RunnerProcess.objects.update_or_create(
            instance=beat.instance,
            defaults=dict(host=beat.host, pid=beat.pid, roles=list(beat.roles),
                          started_at=from_epoch(beat.started_at), last_heartbeat=from_epoch(beat.ts),
                          stats=dict(beat.stats), stopping=beat.stopping),
        )


# ---- the loop -------------------------------------------------------------------------------
# What a record's values make fail, as opposed to a database that is unreachable or locked: the
# database refusing a row (too long, out of range, a NUL in text, a failed check; sqlite3 raises
# OverflowError for integers past 64 bits), or a time no datetime holds (a `ts` in milliseconds
# is ValueError "year 33658 is out of range"). Only these are isolated record by record.
REFUSED_FOR_ITS_DATA = (DataError, IntegrityError, OverflowError, ValueError)
SET_ASIDE_STAGE = "projector"  # the dead-letter stage of records the database refused

class ProjectorBackoff(IdleBackoff):
    """The runtime's idle back-off, pausing as soon as a poll comes back empty, checking 4x a second.

    The runtime's loops keep fetching for GRACE (0.25 s) after their last record and check
    every 20-100 ms: records of a run come in quick succession and each hop's latency counts.
    The projector is not on a run's path (live views read the history topic themselves), and
    while idle it still gets a runner heartbeat every few seconds, so each heartbeat cost it a
    quarter second of refetching in a tight loop plus a second of fast checks. Measured with a
    heartbeat every 5 s, over 60 s: the runtime's settings 3.2-3.7% of a core (broker
    1.8-2.4%); no grace with 100 ms checks 1.6-1.9% (broker 0.9-1.2%); no grace with 250 ms
    checks 1.4% (broker 0.9%), for at most a quarter second more before the first rows after
    an idle spell. An empty poll has already waited its timeout (0.1 s in run_forever) with the
    fetcher running, so nothing in flight is cut short.
    """

    GRACE = 0.0
    FAST_CHECK = SLOW_CHECK = RESTING_CHECK = 0.25


def adopt_offsets(old_group: str, new_group: str, topics: Topics, timeout: float = 10.0) -> int:
    """Give `new_group` the committed offsets `old_group` has on the projector's topics, if it
    has none of its own yet; returns how many partitions it adopted.

    The projector's group was renamed to carry the topic prefix; without this the renamed group
    would start from the beginning and fold every history event in again (harmless, as
    application is idempotent, but slow on a long history). Never fails the start: a broker
    that cannot say or alter offsets just means the new group starts from scratch.
    """
    ours = {topics.history, topics.dlq, topics.heartbeats}
    admin = AdminClient(base_config())

    def committed(group: str) -> list[TopicPartition]:
        result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=timeout)
        partitions = result[group].result(timeout=timeout).topic_partitions or []
        return [TopicPartition(tp.topic, tp.partition, tp.offset) for tp in partitions
                if tp.topic in ours and tp.offset >= 0]

    try:
        if committed(new_group):
            return 0
        adopted = committed(old_group)
        if not adopted:
            return 0
        admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(new_group, adopted)],
                                           request_timeout=timeout)[new_group].result(timeout=timeout)
    except (KafkaException, TimeoutError) as exc:
        log.warning("could not adopt the offsets of group %s for %s (%s): it starts from the committed "
                    "offsets it has, else from the beginning", old_group, new_group, exc)
        return 0
    log.info("group %s adopted the offsets of %s on %d partitions", new_group, old_group, len(adopted))
    return len(adopted)


class Projector:
    """One consumer-group member folding history, dead letters and heartbeats into the database."""

    def __init__(self, topics: Topics | None = None, group_id: str | None = None, batch_size: int = BATCH_SIZE,
                 linger: float | None = None, **consumer_overrides):
        self.topics = topics or Topics(settings.SLUICE_TOPIC_PREFIX)
        if group_id is None:
            group_id = self.topics.group(GROUP_ROLE)
            adopt_offsets(LEGACY_GROUP_ID, group_id, self.topics)
        self.group_id = group_id
        self.batch_size = batch_size
        self.linger = settings.SLUICE_PROJECTOR_LINGER_MS / 1000 if linger is None else linger
        self.stats = ProjectorStats()
        self._stop = threading.Event()
        self._ensure_topics()
        self.consumer = Consumer(self.consumer_settings(**consumer_overrides))
        # The embedded broker ignores the fetch long-poll, so an idle consumer would spin: the
        # assignment is paused while the end offsets stay put.
        self.backoff = ProjectorBackoff(self.consumer, self._stop)
        self._assigned_at = 0.0
        self.last_poll = time.monotonic()  # readiness: the loop is alive while this moves
        self.consumer.subscribe([self.topics.history, self.topics.dlq, self.topics.heartbeats],
                                on_assign=self._on_assign)

    def consumer_settings(self, **overrides) -> dict:
        """The consumer's librdkafka settings. A batch waits `linger` for more records anyway, so
        the fetcher rests as long once it holds some, rather than ask again and again."""
        return consumer_config(self.group_id, defaults=resting_fetcher(round(self.linger * 1000)), **overrides)

    def _ensure_topics(self) -> None:
        """Create the topics this reads if they are missing, before subscribing to them.

        A consumer that subscribes to a topic which does not exist yet is not told when it
        appears until its next metadata refresh, five minutes by default: a bridge started before
        the first runner (or before `up` created the topics) projected nothing in that time. The
        runner creates the same topics the same way; where the bridge may not create topics, it
        says so and reads what the runner creates."""
        layout = self.topics.layout(settings.SLUICE_PARTITIONS)
        ours = {name: layout[name] for name in (self.topics.history, self.topics.dlq, self.topics.heartbeats)}
        try:
            ensure_topics(AdminClient(base_config()), ours, settings.SLUICE_REPLICATION_FACTOR)
        except KafkaException as exc:
            log.warning("projector: could not create %s (%s); reading them once they exist",
                        ", ".join(ours), exc)

    def _on_assign(self, _consumer, _partitions) -> None:
        self._assigned_at = time.monotonic()

    @property
    def settling(self) -> bool:
        """True until the group gave us partitions and their start offsets had time to resolve."""
        return not self._assigned_at or time.monotonic() - self._assigned_at < ASSIGNMENT_GRACE_SECONDS

    def stop(self) -> None:
        """Ask the loop to finish its current batch and return (safe from signal handlers/threads)."""
        self._stop.set()

    def close(self) -> None:
        self.consumer.close()

    def poll_once(self, timeout: float = 0.5) -> int:
        """Consume one batch, apply it in one transaction, then commit offsets. Returns records seen."""
        # poll() returns on the first record; consume(n, timeout) alone would wait out its whole
        # timeout unless n records came, delaying every projection by up to `timeout`.
        self.last_poll = time.monotonic()
        first = self.consumer.poll(self.backoff.timeout(timeout))
        if first is None:
            self.backoff.idle()
            return 0
        self.backoff.busy()
        batch = [first, *self.consumer.consume(self.batch_size - 1, timeout=0)]
        # Under light load each record would otherwise be its own database transaction and
        # synchronous offset commit (a three-step run is eight history events): CPU taken from
        # the runner on a small machine, for a table nobody reads to the millisecond (live pages
        # read the topic). So a short batch waits `linger` (SLUICE_PROJECTOR_LINGER_MS) for more.
        if len(batch) < self.batch_size and self.linger > 0:
            batch += self.consumer.consume(self.batch_size - len(batch), timeout=self.linger)
        decoded = []  # (message, what it decoded to), in the order read
        for msg in batch:
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error on %s: %s", msg.topic(), msg.error())
                continue
            topic = msg.topic()
            if topic == self.topics.history:
                try:
                    decoded.append((msg, codec.decode_history(without_nul(msg.value()), msg.headers())))
                except (codec.DecodeError, ValueError, TypeError) as exc:
                    self.stats.undecodable += 1
                    log.error("undecodable history record %s[%d]@%d skipped: %s",
                              topic, msg.partition(), msg.offset(), exc)
            elif topic == self.topics.dlq:
                decoded.append((msg, dead_letter_from_message(msg)))
            elif topic == self.topics.heartbeats:
                if msg.value() is None:
                    continue  # tombstone: a runner removed its entry
                try:
                    decoded.append((msg, _heartbeat_decoder.decode(without_nul(msg.value()))))
                except (msgspec.DecodeError, ValueError) as exc:
                    self.stats.undecodable += 1
                    log.error("undecodable heartbeat %s@%d skipped: %s", topic, msg.offset(), exc)
        applying = time.perf_counter()
        try:
            self._apply_isolating(decoded)
        except Exception:
            # Nothing of the batch is in the database (one transaction) and nothing committed to
            # Kafka: rewind to the committed offsets so the next poll reads the batch again.
            self._rewind()
            raise
        # Only now, with the rows durable, may Kafka forget these records for this group. (A poll
        # that brought only errors, e.g. a topic not there yet, moved no offset to commit.)
        if any(msg.error() is None for msg in batch):
            self.consumer.commit(asynchronous=False)
        self.stats.batches += 1
        metrics.PROJECTOR_BATCH_SECONDS.observe(time.perf_counter() - applying)
        return len(batch)

    def _apply_isolating(self, decoded: list) -> None:
        """Apply the batch; if the database refuses it for its data, apply halves of it until the
        records it refuses are alone, and set those aside (`_set_aside`). One record the database
        cannot take (a NUL in a field, a number out of range, an id too long) would otherwise
        fail its batch again every two seconds and stop the monitor for good. A crash half-way
        re-reads the whole batch: what was applied is skipped by seq, as after any crash."""
        try:
            self._apply(decoded)
        except REFUSED_FOR_ITS_DATA as exc:
            if len(decoded) == 1:
                self._set_aside(decoded[0][0], exc)
                return
            middle = len(decoded) // 2
            self._apply_isolating(decoded[:middle])
            self._apply_isolating(decoded[middle:])

    def _set_aside(self, msg, exc: Exception) -> None:
        """A record the database refuses, as a dead letter of stage "projector": the monitor lists
        it with the reason, and the record itself stays on its topic. Never replayed (its
        origin is no loop's input); an operator discards it once seen."""
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
        log.error("%s[%d]@%d refused by the database, set aside as a dead letter: %s",
                  msg.topic(), msg.partition(), msg.offset(), reason)
        self.stats.set_aside += 1
        letter = DeadLetter(topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
                            key=_text(msg.key()), value=_text(msg.value()),
                            headers=_stored_headers(msg),
                            error=f"the monitor's database refused it: {reason}", stage=SET_ASIDE_STAGE,
                            source_topic=msg.topic(), source_partition=msg.partition(), source_offset=msg.offset(),
                            failed_at=datetime.now(timezone.utc))
        try:
            with transaction.atomic():
                letter.workflow = dead_letters.attribute(letter)[:100]
                DeadLetter.objects.bulk_create([letter], ignore_conflicts=True)
        except REFUSED_FOR_ITS_DATA:
            log.exception("%s[%d]@%d: not even its dead letter could be stored; skipped",
                          msg.topic(), msg.partition(), msg.offset())

    def _apply(self, decoded: list) -> None:
        history = [item for _msg, item in decoded if isinstance(item, messages.HistoryEvent)]
        dead = [item for _msg, item in decoded if isinstance(item, DeadLetter)]
        beats = [item for _msg, item in decoded if isinstance(item, messages.RunnerHeartbeat)]
        applied = ProjectorStats()  # counted in only if the transaction commits
        with transaction.atomic():
            apply_history(history, applied)
            if dead:
                DeadLetter.objects.bulk_create(dead, ignore_conflicts=True)
                applied.dead_letters += len(dead)
            if beats:
                apply_heartbeats(beats)
                applied.heartbeats += len(beats)
        self.stats.add(applied)

    def _rewind(self) -> None:
        assignment = self.consumer.assignment()
        if not assignment:
            return
        for tp in self.consumer.committed(assignment, timeout=10):
            offset = tp.offset if tp.offset >= 0 else self.consumer.get_watermark_offsets(tp, timeout=5)[0]
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    def run_forever(self) -> ProjectorStats:
        log.info("projector reading %s, %s and %s as group %s", self.topics.history, self.topics.dlq,
                 self.topics.heartbeats, self.group_id)
        while not self._stop.is_set():
            try:
                self.poll_once(timeout=0.1)
            except KafkaException as exc:
                # A commit rejected during a rebalance: the batch is re-read and skipped by seq.
                self.stats.last_error = str(exc)
                log.warning("projector: %s (the batch will be re-read and applied idempotently)", exc)
                time.sleep(0.5)
            except DatabaseError as exc:
                # The database refused the batch (down, locked, or a row it will not take): keep
                # the bridge alive, say why, and retry the same batch rather than skip history.
                # Anything else is a bug: let it stop the bridge (the supervisor restarts it).
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("projector: batch not applied, retrying in 2 s")
                from django.db import close_old_connections

                close_old_connections()
                self._stop.wait(2)
        return self.stats

    def run_until_idle(self, idle_seconds: float = 1.5, timeout: float = 30.0) -> ProjectorStats:
        """Poll until nothing arrived for `idle_seconds` (or `timeout` passed). For tests and tools."""
        deadline = time.monotonic() + timeout
        last_data = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self.poll_once(timeout=0.2) or self.settling:
                # Joining the group takes a moment; idleness only counts once partitions are ours.
                last_data = time.monotonic()
            elif time.monotonic() - last_data > idle_seconds:
                break
        return self.stats
