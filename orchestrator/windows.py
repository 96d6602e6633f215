"""Time windows over a Kafka trigger's records: which windows a record falls in, how aggregates
grow, when a window closes and what its run receives. Pure: no Kafka, no clock (the runtime's
window loop passes the time in), so the same rules are tested without a broker.

Times are milliseconds since the epoch. Windows follow the record timestamp and close on the
wall clock: a window closes when the clock passes its end plus the grace period, also when no
later record arrives; a record for a window that has closed is late and dropped (counted).
- tumbling: [n*size, (n+1)*size)
- hopping: windows of `size` starting every `advance`; a record is in every one that covers it
- session: per key, records closer than `gap` to each other form one session; it closes `gap`
  (plus grace) after its last record. Its window_start/window_end are its first and last record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import msgspec

OPS = ("count", "sum", "min", "max", "avg", "collect", "count_distinct")
COLLECT_LIMIT = 100  # default bound of a `collect` list
DISTINCT_LIMIT = 10_000  # count_distinct counts exactly up to this many distinct values per window
WINDOW_TYPES = ("tumbling", "hopping", "session")


@dataclass(frozen=True)
class Aggregate:
    op: str
    of: str | None = None  # expression over `trigger` and `record`; not used by count
    limit: int = COLLECT_LIMIT


@dataclass(frozen=True)
class WindowSpec:
    type: str
    size_ms: int = 0
    advance_ms: int = 0
    gap_ms: int = 0
    grace_ms: int = 0
    key: str | None = None  # template; None: the record key
    aggregates: dict[str, Aggregate] = field(default_factory=dict)
    emit_topic: str | None = None

    @classmethod
    def from_config(cls, config: dict) -> "WindowSpec":
        def ms(name: str) -> int:
            return int(round(float(config.get(name) or 0) * 1000))

        aggregates = {name: Aggregate(op=agg["op"], of=agg.get("of"), limit=int(agg.get("limit") or COLLECT_LIMIT))
                      for name, agg in (config.get("aggregates") or {}).items()}
        size = ms("size_seconds")
        return cls(type=config["type"], size_ms=size, advance_ms=ms("advance_seconds") or size, gap_ms=ms("gap_seconds"),
                   grace_ms=ms("grace_seconds"), key=config.get("key") or None, aggregates=aggregates,
                   emit_topic=config.get("emit_topic") or None)


class Window(msgspec.Struct, kw_only=True):
    start: int
    end: int  # exclusive for tumbling/hopping; the last record's time for sessions
    records: int = 0
    values: dict[str, Any] = {}  # aggregate name -> its running value


class KeyWindows(msgspec.Struct, kw_only=True):
    """Everything open for one window key of one workflow (one changelog record)."""

    windows: dict[str, Window] = {}  # str(start) -> window
    late: int = 0  # late records since the last window of this key closed


def closes_at(spec: WindowSpec, window: Window) -> int:
    if spec.type == "session":
        return window.end + spec.gap_ms + spec.grace_ms
    return window.end + spec.grace_ms


def covering(spec: WindowSpec, ts: int) -> list[tuple[int, int]]:
    """The (start, end) of every tumbling or hopping window that holds a record at `ts`."""
    if spec.type == "tumbling":
        start = ts - ts % spec.size_ms
        return [(start, start + spec.size_ms)]
    last = ts - ts % spec.advance_ms
    starts = range(last, ts - spec.size_ms, -spec.advance_ms)
    return sorted((start, start + spec.size_ms) for start in starts if start <= ts < start + spec.size_ms)


def add(spec: WindowSpec, state: KeyWindows | None, ts: int, values: dict[str, Any], now: int) -> tuple[KeyWindows, bool]:
    """The key's windows with a record at `ts` added; True if the record was late (dropped)."""
    state = KeyWindows(windows=dict(state.windows), late=state.late) if state else KeyWindows()
    if spec.type == "session":
        if ts + spec.gap_ms + spec.grace_ms <= now:
            state.late += 1
            return state, True
        merged = Window(start=ts, end=ts)
        merged = _fold(spec, merged, values)
        for key, window in list(state.windows.items()):
            if window.start - spec.gap_ms <= ts <= window.end + spec.gap_ms:
                merged = _merge(spec, merged, window)
                del state.windows[key]
        state.windows[str(merged.start)] = merged
        return state, False
    open_windows = [(start, end) for start, end in covering(spec, ts) if end + spec.grace_ms > now]
    if not open_windows:
        state.late += 1
        return state, True
    for start, end in open_windows:
        window = state.windows.get(str(start)) or Window(start=start, end=end)
        state.windows[str(start)] = _fold(spec, window, values)
    return state, False


def due(spec: WindowSpec, state: KeyWindows, now: int) -> list[Window]:
    """The key's windows that close at or before `now`, oldest first."""
    return sorted((w for w in state.windows.values() if closes_at(spec, w) <= now), key=lambda w: w.start)


def next_close(spec: WindowSpec, state: KeyWindows | None) -> int | None:
    if not state or not state.windows:
        return None
    return min(closes_at(spec, window) for window in state.windows.values())


def without(state: KeyWindows, closed: list[Window]) -> KeyWindows | None:
    """The key's state once `closed` are emitted; None when nothing is left to remember."""
    gone = {str(window.start) for window in closed}
    windows = {key: window for key, window in state.windows.items() if key not in gone}
    return KeyWindows(windows=windows, late=0) if windows else None


def result(spec: WindowSpec, key: Any, window: Window) -> dict:
    """What a closed window's run receives (and `emit_topic` gets): key, times, aggregates."""
    output = {"key": key, "window_start": iso(window.start), "window_end": iso(window.end)}
    for name, aggregate in spec.aggregates.items():
        value = window.values.get(name)
        if aggregate.op == "count":
            value = value or 0
        elif aggregate.op == "avg":
            value = None if not value or not value[1] else value[0] / value[1]
        elif aggregate.op == "count_distinct":
            value = len(value or [])
        elif aggregate.op == "collect":
            value = list(value or [])
        elif aggregate.op == "sum":
            value = value or 0
        output[name] = value
    return output


def run_id(slug: str, key: Any, window: Window) -> str:
    """Deterministic, so a window closed twice (a replayed transaction) starts one run."""
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{slug}-w{window.start}-{digest}"


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_value(aggregate: Aggregate, value: Any) -> str | None:
    """Why `value` cannot feed the aggregate, if it cannot (the record then goes to the dead-letter topic)."""
    if aggregate.op in ("sum", "avg") and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return f"{aggregate.op} needs a number, got {value!r}"
    if aggregate.op in ("min", "max") and value is not None and not isinstance(value, (int, float, str)):
        return f"{aggregate.op} needs a number or text, got {type(value).__name__}"
    return None


def _fold(spec: WindowSpec, window: Window, values: dict[str, Any]) -> Window:
    folded = dict(window.values)
    for name, aggregate in spec.aggregates.items():
        current, value = folded.get(name), values.get(name)
        if aggregate.op == "count":
            folded[name] = (current or 0) + 1
        elif aggregate.op == "sum":
            folded[name] = (current or 0) + value
        elif aggregate.op == "avg":
            total, count = current or (0, 0)
            folded[name] = [total + value, count + 1]
        elif aggregate.op in ("min", "max"):
            if value is not None and (current is None or _better(aggregate.op, value, current)):
                folded[name] = value
        elif aggregate.op == "collect":
            items = list(current or [])
            if len(items) < aggregate.limit:
                items.append(value)
            folded[name] = items
        elif aggregate.op == "count_distinct":
            seen = list(current or [])
            token = json.dumps(value, sort_keys=True, default=str)
            if token not in seen and len(seen) < DISTINCT_LIMIT:
                seen.append(token)
            folded[name] = seen
    return Window(start=window.start, end=window.end, records=window.records + 1, values=folded)


def _better(op: str, value: Any, current: Any) -> bool:
    try:
        return value < current if op == "min" else value > current
    except TypeError:  # a number against text: keep the first kind seen
        return False


def _merge(spec: WindowSpec, a: Window, b: Window) -> Window:
    """Two sessions joined by a record between them (lists keep time order)."""
    if b.start < a.start:
        a, b = b, a
    merged: dict[str, Any] = {}
    for name, aggregate in spec.aggregates.items():
        x, y = a.values.get(name), b.values.get(name)
        if x is None or y is None:
            merged[name] = y if x is None else x
        elif aggregate.op in ("count", "sum"):
            merged[name] = x + y
        elif aggregate.op == "avg":
            merged[name] = [x[0] + y[0], x[1] + y[1]]
        elif aggregate.op in ("min", "max"):
            merged[name] = y if _better(aggregate.op, y, x) else x
        elif aggregate.op == "collect":
            merged[name] = (x + y)[:aggregate.limit]
        elif aggregate.op == "count_distinct":
            merged[name] = (x + [token for token in y if token not in x])[:DISTINCT_LIMIT]
    return Window(start=min(a.start, b.start), end=max(a.end, b.end), records=a.records + b.records, values=merged)
