"""The records Sluice writes to Kafka, one typed schema per kind.

These are plain data (msgspec Structs), shared by the pure engine, the runtime loops, the web
side that sends commands, and the history projector. `orchestrator.runtime.codec` turns them
into bytes and headers; nothing else should serialise them by hand.

Times are Unix epoch seconds (float, UTC). Every record on `wf.runs` carries the run id, which
is also its Kafka key, so all records of one run are ordered on one partition.
"""

from typing import Any

import msgspec

SCHEMA_VERSION = 1


# ---- wf.runs: commands, step results, correlated events -----------------------------------
class StartRun(msgspec.Struct, tag="start", kw_only=True):
    run_id: str
    workflow: str
    version: int
    input: Any = None
    # How the run was started: {"type": "manual"} or, for a Kafka trigger,
    # {"type": "kafka", "topic", "partition", "offset", "key", "headers", "timestamp"}.
    trigger: dict = {}
    started_by: str = ""
    ts: float


class CancelRun(msgspec.Struct, tag="cancel", kw_only=True):
    run_id: str
    reason: str = ""
    by: str = ""
    ts: float


class SignalRun(msgspec.Struct, tag="signal", kw_only=True):
    """A named signal for a run; an `approval` step waiting on that name consumes it."""

    run_id: str
    name: str
    payload: Any = None
    by: str = ""
    ts: float


class RetryRun(msgspec.Struct, tag="retry", kw_only=True):
    """Re-run a failed or cancelled run from its failed steps, keeping what succeeded."""

    run_id: str
    by: str = ""
    ts: float


class StepResult(msgspec.Struct, tag="result", kw_only=True):
    """A worker's outcome for one attempt of one step. The engine keeps only the first per attempt."""

    run_id: str
    step_id: str
    attempt: int
    ok: bool
    output: Any = None
    error: str | None = None
    started_at: float
    ended_at: float
    worker: str = ""
    # The attempt was handed on (a Celery task); `output` says where. Its outcome comes later.
    pending: bool = False
    # On an outcome that follows a hand-on: where it was handed (as the pending result's
    # `output`). The outcome can overtake the worker's report of the hand-on (the task runs
    # before the worker's transaction commits); with this the engine records the hand-on all
    # the same, so the history reads the same in either order.
    handed_on: dict | None = None


class EventArrived(msgspec.Struct, tag="event", kw_only=True):
    """A record on a user topic that matched a `wait_for_event` step's correlation."""

    run_id: str
    step_id: str
    attempt: int
    event: Any = None
    ts: float


class StepPickedUp(msgspec.Struct, tag="picked_up", kw_only=True):
    """A worker has a step attempt in hand and is still working on it (sent once an attempt has
    taken a while, so quick steps cost nothing): the engine stops waiting for a pick-up."""

    run_id: str
    step_id: str
    attempt: int
    worker: str = ""
    ts: float


class ChildFinished(msgspec.Struct, tag="child", kw_only=True):
    """A child run (of a `subworkflow` step, an item of a `foreach` step) ended: sent to its
    parent run, which may live on another partition and another engine."""

    run_id: str  # the parent run
    step_id: str
    attempt: int
    index: int = 0  # the foreach item
    child_run_id: str
    status: str  # succeeded, failed, cancelled
    output: Any = None
    error: str | None = None
    ts: float


RunCommand = StartRun | CancelRun | SignalRun | RetryRun | StepResult | EventArrived | StepPickedUp | ChildFinished


# ---- wf.tasks.<queue>: work for step handlers ---------------------------------------------
class StepTask(msgspec.Struct, kw_only=True):
    run_id: str
    workflow: str
    version: int
    step_id: str
    type: str
    attempt: int
    # Config with templates already rendered; secrets are still markers (see expressions.py),
    # listed with their positions under "$secrets" (names and places, never values), and are
    # resolved by the worker only, so they never reach Kafka.
    config: Any = None
    idempotency_key: str
    timeout_seconds: float | None = None
    dispatched_at: float


# ---- wf.history: the audit log and the monitor feed ---------------------------------------
class HistoryEvent(msgspec.Struct, kw_only=True):
    """One run or step lifecycle event.

    kinds: run_started, run_succeeded, run_failed, run_cancelled, run_retried, on_failure_started,
           step_started, step_redispatched, step_picked_up, step_succeeded, step_failed,
           step_retrying, step_waiting, step_skipped, step_cancelled, child_started,
           child_finished, signal_received.
    `seq` increases by one per event within a run: consumers use it to apply events once.
    """

    run_id: str
    seq: int
    kind: str
    ts: float
    workflow: str
    version: int
    step_id: str = ""
    step_type: str = ""
    attempt: int = 0
    data: dict = {}
    # The input of the decision that wrote this event: "runs/<partition>/<offset>" (a wf.runs
    # record), "timer", or "rejected:<causes>" (what those records did to the run was dropped
    # and the run failed). manage.py verify_history feeds the same inputs to decide() again.
    cause: str = ""


# ---- wf.windows.in / wf.windows: stream aggregation ----------------------------------------
class WindowInput(msgspec.Struct, kw_only=True):
    """A record that passed a windowed trigger's filter, re-keyed by its window key (the
    trigger writes it to wf.windows.in, keyed by [slug, key], so one window loop sees every
    record of a key whatever partition it came from: Kafka Streams' repartition)."""

    slug: str
    key: Any
    ts: int  # the record's timestamp, ms
    values: dict = {}  # aggregate name -> the value its `of` expression gave
    source: dict = {}  # topic, partition, offset of the original record


# ---- wf.waits: open wait_for_event subscriptions (compacted; key run_id/step_id) ----------
class WaitSubscription(msgspec.Struct, kw_only=True):
    run_id: str
    step_id: str
    attempt: int
    topic: str
    # The value the event's correlation expression must produce, rendered when the wait began.
    correlation: str
    # Expression evaluated against each record on `topic` (names: event, record).
    key_expression: str
    deadline: float | None = None


# ---- wf.definitions: published workflow versions (compacted) ------------------------------
class PublishedDefinition(msgspec.Struct, tag="definition", kw_only=True):
    """Key `slug@version`. Runners keep every version, so in-flight runs finish on theirs."""

    slug: str
    version: int
    definition: dict
    published_at: float
    published_by: str = ""


class LiveVersion(msgspec.Struct, tag="live", kw_only=True):
    """Key `slug`. Which version new trigger-started runs of a workflow use."""

    slug: str
    version: int | None  # None: unpublished (triggers stop)
    # For a Kafka trigger: where its topic ended when this was written (partition -> offset), so
    # "every record produced after publishing" does not depend on record timestamps. Partitions
    # not listed (or a topic that did not exist yet) start at their beginning.
    trigger_topic: str | None = None
    trigger_offsets: dict[str, int] | None = None


class TriggerControl(msgspec.Struct, tag="trigger", kw_only=True):
    """Key `slug#trigger`. Whether the workflow's trigger is paused: records of a paused Kafka
    trigger wait in their topic; schedules and webhooks of a paused workflow start nothing."""

    slug: str
    paused: bool
    by: str = ""
    ts: float


DefinitionRecord = PublishedDefinition | LiveVersion | TriggerControl


# ---- wf.heartbeats: runner processes (compacted; key instance id) -------------------------
class RunnerHeartbeat(msgspec.Struct, kw_only=True):
    instance: str
    host: str
    pid: int
    roles: list[str] = []  # "engine", "worker:<queue>", "triggers"
    started_at: float
    ts: float
    # Counters since start: {"records": n, "runs_started": n, "dlq": n, ...}
    stats: dict = {}
    stopping: bool = False


# ---- wf.dlq: records that could not be processed -------------------------------------------
# The value and key are the original record's, untouched; these headers say what went wrong.
DLQ_ERROR = "sluice-error"  # human-readable reason
DLQ_STAGE = "sluice-stage"  # which loop gave up: engine, worker, trigger, waits
DLQ_SOURCE_TOPIC = "sluice-source-topic"
DLQ_SOURCE_PARTITION = "sluice-source-partition"
DLQ_SOURCE_OFFSET = "sluice-source-offset"
DLQ_FAILED_AT = "sluice-failed-at"  # epoch seconds as text
DLQ_WORKFLOW = "sluice-workflow"  # the workflow whose trigger refused the record (trigger stage)
# Present when the value was too big to copy: its size in bytes. Read it at the source coordinates.
DLQ_VALUE_OMITTED = "sluice-value-omitted"
