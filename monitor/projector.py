"""The history projector: folds `wf.history` (plus `wf.dlq` and `wf.heartbeats`) into database rows.

It reads in its own consumer group ("sluice-projector"), applies each polled batch in ONE
database transaction and commits the Kafka offsets only after the database commit. A crash
between the two replays the batch, which is harmless: every history event carries a per-run
`seq`, Run.last_seq remembers the last one folded in, and an event at or below it changes
nothing. At-least-once delivery plus idempotent application is effectively-once, and replaying
the whole topic into a fresh group leaves identical rows.

`python manage.py bridge` runs `Projector.run_forever()`; tests use `run_until_idle()`.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from django.conf import settings
from django.db import DatabaseError, transaction

from orchestrator import messages
from orchestrator.runtime import codec
from orchestrator.runtime.kafka import consumer_config
from orchestrator.runtime.topics import Topics

from . import alerts, dead_letters, metrics
from .models import DeadLetter, HistoryEntry, Run, RunnerProcess, RunStatus, StepRun, StepStatus

log = logging.getLogger(__name__)

GROUP_ID = "sluice-projector"
BATCH_SIZE = 500
# The embedded broker ignores the fetch long-poll, so an idle consumer would spin. After an empty
# poll the projector pauses its assignment and probes the end offsets every IDLE_PAUSE_SECONDS
# for at most IDLE_SPELL_SECONDS (see _back_off_when_idle): idle CPU 1.07 -> 0.14 s per 10 s.
IDLE_PAUSE_SECONDS = 0.1
IDLE_SPELL_SECONDS = 5.0
# Pausing while the client still looks up a new assignment's start offsets stalls that lookup
# (measured: ~1 s late first fetch), so the back-off waits this long after each assignment.
ASSIGNMENT_GRACE_SECONDS = 2.0

_heartbeat_decoder = msgspec.json.Decoder(messages.RunnerHeartbeat)


def from_epoch(value) -> datetime | None:
    if value is None:
        return None
    return datetime.fromtimestamp(float(value), tz=timezone.utc)


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
    last_error: str = ""
    by_kind: dict = field(default_factory=lambda: defaultdict(int))


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
        runs = {run.id: run for run in Run.objects.filter(id__in=by_run)}
        steps = {(step.run_id, step.step_id): step for step in StepRun.objects.filter(run_id__in=by_run)}
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
                    run = Run(id=run_id, workflow=event.workflow, version=event.version,
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
                        step = StepRun(run_id=run_id, step_id=event.step_id, type=event.step_type, attempts=[])
                        steps[key] = step
                        new_steps[key] = step
                    elif key not in new_steps:
                        changed_steps.add(key)
                    _fold_step(step, event)
                run.last_seq = event.seq
                if event.kind == "run_failed":
                    failures.append((run, event))
                entries.append(HistoryEntry(run_id=run_id, seq=event.seq, kind=event.kind,
                                            step_id=event.step_id, ts=from_epoch(event.ts),
                                            data=_history_data(event)))
                stats.applied += 1
                stats.by_kind[event.kind] += 1

        Run.objects.bulk_create(new_runs.values())
        run_fields = ["workflow", "version", "status", "input", "output", "error", "trigger", "started_by",
                      "created_at", "started_at", "ended_at", "last_seq"]
        Run.objects.bulk_update([runs[run_id] for run_id in changed_runs], run_fields, batch_size=200)
        StepRun.objects.bulk_create(new_steps.values())
        step_fields = ["type", "status", "attempts", "input", "output", "error", "port", "started_at", "ended_at"]
        StepRun.objects.bulk_update([steps[key] for key in changed_steps], step_fields, batch_size=200)
        # ignore_conflicts: a row for this (run, seq) can exist only from an earlier apply of the
        # very same event.
        HistoryEntry.objects.bulk_create(entries, ignore_conflicts=True)
        # In the same transaction: a failure is queued exactly when it is first projected.
        stats.alerts_queued += alerts.queue_failures(failures)
    return stats


# ---- dead letters and heartbeats ------------------------------------------------------------
def _text(raw: bytes | None) -> str:
    if raw is None:
        return ""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode()


def dead_letter_from_message(msg) -> DeadLetter:
    headers = {name: _text(value) for name, value in (msg.headers() or [])}

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
class Projector:
    """One consumer-group member folding history, dead letters and heartbeats into the database."""

    def __init__(self, topics: Topics | None = None, group_id: str = GROUP_ID, batch_size: int = BATCH_SIZE,
                 **consumer_overrides):
        self.topics = topics or Topics(settings.SLUICE_TOPIC_PREFIX)
        self.group_id = group_id
        self.batch_size = batch_size
        self.stats = ProjectorStats()
        self._stop = threading.Event()
        self._idle_backoff = settings.SLUICE_EMBEDDED_BROKER
        self.consumer = Consumer(consumer_config(group_id, **consumer_overrides))
        self._assigned_at = 0.0
        self.last_poll = time.monotonic()  # readiness: the loop is alive while this moves
        self.consumer.subscribe([self.topics.history, self.topics.dlq, self.topics.heartbeats],
                                on_assign=self._on_assign)

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
        first = self.consumer.poll(timeout)
        if first is None:
            self._back_off_when_idle()
            return 0
        batch = [first, *self.consumer.consume(self.batch_size - 1, timeout=0)]
        history, dead, beats = [], [], []
        for msg in batch:
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error on %s: %s", msg.topic(), msg.error())
                continue
            topic = msg.topic()
            if topic == self.topics.history:
                try:
                    history.append(codec.decode_history(msg.value(), msg.headers()))
                except (codec.DecodeError, ValueError, TypeError) as exc:
                    self.stats.undecodable += 1
                    log.error("undecodable history record %s[%d]@%d skipped: %s",
                              topic, msg.partition(), msg.offset(), exc)
            elif topic == self.topics.dlq:
                dead.append(dead_letter_from_message(msg))
            elif topic == self.topics.heartbeats:
                if msg.value() is None:
                    continue  # tombstone: a runner removed its entry
                try:
                    beats.append(_heartbeat_decoder.decode(msg.value()))
                except (msgspec.DecodeError, ValueError) as exc:
                    self.stats.undecodable += 1
                    log.error("undecodable heartbeat %s@%d skipped: %s", topic, msg.offset(), exc)
        applying = time.perf_counter()
        try:
            self._apply(history, dead, beats)
        except Exception:
            # Nothing of the batch is in the database (one transaction) and nothing committed to
            # Kafka: rewind to the committed offsets so the next poll reads the batch again.
            self._rewind()
            raise
        # Only now, with the rows durable, may Kafka forget these records for this group.
        self.consumer.commit(asynchronous=False)
        self.stats.batches += 1
        metrics.PROJECTOR_BATCH_SECONDS.observe(time.perf_counter() - applying)
        return len(batch)

    def _apply(self, history, dead, beats) -> None:
        with transaction.atomic():
            apply_history(history, self.stats)
            if dead:
                DeadLetter.objects.bulk_create(dead, ignore_conflicts=True)
                self.stats.dead_letters += len(dead)
            if beats:
                apply_heartbeats(beats)
                self.stats.heartbeats += len(beats)

    def _rewind(self) -> None:
        assignment = self.consumer.assignment()
        if not assignment:
            return
        for tp in self.consumer.committed(assignment, timeout=10):
            offset = tp.offset if tp.offset >= 0 else self.consumer.get_watermark_offsets(tp, timeout=5)[0]
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    def _back_off_when_idle(self) -> None:
        """Sit out an idle spell paused, until the end offsets move (or IDLE_SPELL_SECONDS pass).

        The embedded broker ignores the fetch long-poll, so an idle consumer's fetcher spins:
        pausing only between polls still spun through every poll (measured ~11% CPU idle).
        While paused we probe the high watermarks; the spell ends when one grows, or after
        IDLE_SPELL_SECONDS so the loop polls again (group heartbeats, rebalances, stop).
        """
        if not self._idle_backoff or self.settling:
            return
        assignment = self.consumer.assignment()
        if not assignment:
            return
        next_offsets = self._next_offsets(assignment)
        if self._behind(assignment, next_offsets):
            return  # records are there, the fetch just has not brought them yet: keep polling
        self.consumer.pause(assignment)
        try:
            deadline = time.monotonic() + IDLE_SPELL_SECONDS
            while time.monotonic() < deadline and not self._stop.wait(IDLE_PAUSE_SECONDS):
                if self._behind(assignment, next_offsets):
                    return
        finally:
            self.consumer.resume(assignment)

    def _next_offsets(self, assignment) -> dict:
        """The offset this member reads next per partition: its position, else the group's
        committed offset, else the start of the partition (auto.offset.reset=earliest)."""
        result = {(tp.topic, tp.partition): tp.offset for tp in self.consumer.position(assignment)}
        unknown = [tp for tp in assignment if result.get((tp.topic, tp.partition), -1) < 0]
        if unknown:
            for tp in self.consumer.committed(unknown, timeout=5):
                offset = tp.offset
                if offset < 0:
                    offset = self.consumer.get_watermark_offsets(tp, timeout=2, cached=False)[0]
                result[(tp.topic, tp.partition)] = offset
        return result

    def _behind(self, assignment, next_offsets: dict) -> bool:
        return any(self.consumer.get_watermark_offsets(tp, timeout=2, cached=False)[1]
                   > next_offsets[(tp.topic, tp.partition)] for tp in assignment)

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
