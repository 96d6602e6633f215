"""Window rules (pure): assignment, aggregates, closing, late records, sessions."""

from __future__ import annotations

from orchestrator import windows as W


def spec(**config):
    base = {"type": "tumbling", "size_seconds": 10, "aggregates": {"n": {"op": "count"}}}
    return W.WindowSpec.from_config({**base, **config})


def test_tumbling_windows_cover_each_record_once_and_close_after_the_grace():
    tumbling = spec(grace_seconds=2, aggregates={"n": {"op": "count"}, "total": {"op": "sum", "of": "trigger.x"}})
    state = None
    for ts, x in [(1_000, 1), (9_999, 2), (10_000, 4)]:
        state, late = W.add(tumbling, state, ts, {"n": None, "total": x}, now=10_500)
        assert not late
    assert sorted(state.windows) == ["0", "10000"]
    assert W.due(tumbling, state, now=11_999) == []
    [closed] = W.due(tumbling, state, now=12_000)
    assert W.result(tumbling, "k", closed) == {"key": "k", "window_start": "1970-01-01T00:00:00.000Z",
                                              "window_end": "1970-01-01T00:00:10.000Z", "n": 2, "total": 3}
    assert sorted(W.without(state, [closed]).windows) == ["10000"]


def test_a_record_for_a_closed_window_is_late_and_counted():
    tumbling = spec(grace_seconds=1)
    state, late = W.add(tumbling, None, 5_000, {}, now=11_000)
    assert late and state.late == 1 and not state.windows
    state, late = W.add(tumbling, state, 10_500, {}, now=11_000)
    assert not late and state.late == 1


def test_hopping_windows_hold_a_record_in_each_window_that_covers_it():
    hopping = spec(type="hopping", size_seconds=10, advance_seconds=5)
    assert W.covering(hopping, 12_000) == [(5_000, 15_000), (10_000, 20_000)]
    assert W.covering(hopping, 10_000) == [(5_000, 15_000), (10_000, 20_000)]
    state, _ = W.add(hopping, None, 12_000, {"n": None}, now=12_000)
    assert {k: w.values["n"] for k, w in state.windows.items()} == {"5000": 1, "10000": 1}


def test_sessions_grow_merge_and_close_a_gap_after_their_last_record():
    session = spec(type="session", gap_seconds=2, grace_seconds=1,
                   aggregates={"n": {"op": "count"}, "items": {"op": "collect", "of": "x"}})
    state = None
    for ts, x, now in [(0, "a", 0), (1_500, "b", 1_500), (5_000, "c", 5_000)]:
        state, late = W.add(session, state, ts, {"n": None, "items": x}, now=now)
        assert not late
    assert sorted(state.windows) == ["0", "5000"]
    state, late = W.add(session, state, 3_250, {"n": None, "items": "d"}, now=5_100)  # within 2 s of both
    [only] = state.windows.values()
    assert (only.start, only.end, only.values["n"]) == (0, 5_000, 4)
    assert sorted(only.values["items"]) == ["a", "b", "c", "d"]
    assert W.due(session, state, now=7_999) == [] and W.due(session, state, now=8_000) == [only]


def test_every_aggregate():
    every = spec(aggregates={name: {"op": name, "of": "x"} for name in W.OPS} | {"few": {"op": "collect", "of": "x", "limit": 2}})
    state = None
    for value in (3, 1, 3, 5):
        state, _ = W.add(every, state, 1_000, {**{name: value for name in W.OPS}, "few": value}, now=1_000)
    result = W.result(every, None, next(iter(state.windows.values())))
    assert {k: result[k] for k in [*W.OPS, "few"]} == {"count": 4, "sum": 12, "min": 1, "max": 5, "avg": 3.0,
                                                     "collect": [3, 1, 3, 5], "count_distinct": 3, "few": [3, 1]}


def test_aggregate_values_are_checked():
    assert W.check_value(W.Aggregate("sum", "x"), "12") == "sum needs a number, got '12'"
    assert W.check_value(W.Aggregate("avg", "x"), True) is not None
    assert W.check_value(W.Aggregate("max", "x"), "b") is None


def test_window_run_ids_are_stable_per_workflow_key_and_window():
    window = W.Window(start=10_000, end=20_000)
    assert W.run_id("clicks", "ada", window) == W.run_id("clicks", "ada", window) != W.run_id("clicks", "bob", window)
