"""Operating limits the engine applies while deciding: plain values the runtime passes in.

Kept out of decide()'s workflow data because they belong to the installation (settings), not to
a workflow version; kept as an argument (not read from settings) so the engine stays pure.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    # Sluice's own topics: a workflow may never write to or wait on them (a definition published
    # before validation refused such topics is refused here again).
    reserved_topic_prefix: str = "wf."
    # One run input or step output, encoded as JSON.
    max_payload_bytes: int = 256 * 1024
    # A worker step not picked up by any worker within this time is dispatched again (same
    # attempt, same idempotency key), each time waiting twice as long; None: never.
    schedule_to_start_seconds: float | None = 60.0


DEFAULT_POLICY = Policy()
