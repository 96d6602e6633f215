"""The engine: a pure state machine, decide(workflow, state, event, now) -> Decision.

No Kafka, no database, no clock: the runtime feeds it records and the time, and carries out
the effects it returns. That is what lets the same logic be property-tested without a broker
and replayed after a crash with the same outcome.
"""

from .decide import Decision, decide
from .effects import (CancelChild, CloseWait, Dispatch, Effect, NotifyParent, OpenWait, Produce, Record, Rejected,
                      StartChild, Tick)
from .policy import DEFAULT_POLICY, Policy

__all__ = ["Decision", "decide", "Tick", "Rejected", "Effect", "Dispatch", "Produce", "OpenWait", "CloseWait",
           "StartChild", "CancelChild", "NotifyParent", "Record", "Policy", "DEFAULT_POLICY"]
