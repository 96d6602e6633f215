"""The in-memory channel layer, minus its per-message full sweep.

Channels' InMemoryChannelLayer runs `_clean_expired()` (a pass over every channel and every
group membership) on EVERY send, group_send and receive. With 200 sockets watching and 500
history events a second that sweep was ~40% of the web process's event-loop time (py-spy),
and deliveries fell seconds behind. Expiry is a 60-second matter, so sweeping at most once a
second changes nothing a client can observe.
"""

import time

from channels.layers import InMemoryChannelLayer


class SweepingInMemoryChannelLayer(InMemoryChannelLayer):
    sweep_interval = 1.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._last_sweep = 0.0

    def _clean_expired(self):
        now = time.monotonic()
        if now - self._last_sweep >= self.sweep_interval:
            self._last_sweep = now
            super()._clean_expired()
