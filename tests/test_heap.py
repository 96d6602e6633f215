"""The cycle collector and the runtime's long-lived memory (orchestrator/runtime/heap.py)."""

from __future__ import annotations

import gc

from orchestrator.engine.state import Attempt, Children, RunState, StepState
from orchestrator.runtime import codec, heap


def test_run_states_are_not_walked_by_the_cycle_collector():
    state = RunState(run_id="r", workflow="w", version=1, created_at=1.0, input={"deep": [{"x": 1}]},
                     steps={"a": StepState(attempts=[Attempt(number=1, started_at=1.0)], output={"y": [1]},
                                           children=Children(workflow="c", version=1, total=1))})
    decoded = codec.decode_state(codec.encode(state))
    for value in (state, decoded, decoded.steps["a"], decoded.steps["a"].children):
        assert not gc.is_tracked(value), type(value).__name__
    # Their JSON containers still are, as any dict a handler returned.
    assert gc.is_tracked(decoded.input)


def test_start_up_objects_are_frozen_out_of_later_collections():
    before = gc.get_freeze_count()
    survivor = [{"kept": True}]
    try:
        heap.freeze_startup_objects()
        frozen = gc.get_freeze_count()
        assert frozen > before
        assert not any(survivor is obj for obj in gc.get_objects(2))  # out of the oldest generation
        gc.collect(2)  # a later full collection leaves them where they are
        assert gc.get_freeze_count() == frozen and survivor[0]["kept"]
    finally:
        gc.unfreeze()  # this test process is not a runner
