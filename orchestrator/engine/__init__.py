"""The engine: a pure state machine, decide(workflow, state, event, now) -> Decision.

No Kafka, no database, no clock: the runtime feeds it records and the time, and carries out
the effects it returns. That is what lets the same logic be property-tested without a broker
and replayed after a crash with the same outcome.
"""

from .decide import Decision, decide
from .effects import CloseWait, Dispatch, Effect, OpenWait, Produce, Record, Tick

__all__ = ["Decision", "decide", "Tick", "Effect", "Dispatch", "Produce", "OpenWait", "CloseWait", "Record"]
