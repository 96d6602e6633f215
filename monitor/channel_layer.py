"""The web process's in-memory channel layer: Channels' layer contract, with a sweep at most once a second.

Channels' InMemoryChannelLayer runs `_clean_expired()` (a pass over every channel and every
group membership) on EVERY send, group_send and receive. With 200 sockets watching and 500
history events a second that sweep was ~40% of the web process's event-loop time (py-spy),
and deliveries fell seconds behind. Expiry is a 60-second matter, so sweeping at most once a
second changes nothing a client can observe.

This layer used to subclass InMemoryChannelLayer and override that private method, which
Channels may rename or stop calling in any release (the speed-up would silently vanish, or
the class break). Channels' public extension point for a layer is the channel layer
contract (docs: "Channel Layer Specification"; `channels.layers.BaseChannelLayer`): send,
receive, new_channel, and the `groups` and `flush` extensions. This class implements that
contract itself, using only BaseChannelLayer's public helpers (name checks, capacities), with
the same semantics as the in-memory layer: per-channel capacity (ChannelFull), messages
expire after `expiry` seconds and a channel with an expired message leaves all its groups
(its consumer is gone), group memberships expire after `group_expiry`, group_send skips full
channels. tests/test_live_fanout.py checks these against the contract.

One process only, like InMemoryChannelLayer: several web processes need a shared layer
(channels_redis), see README "Production".
"""

from __future__ import annotations

import asyncio
import random
import string
import time
from collections import deque
from copy import deepcopy

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer


class _Channel:
    """Messages waiting on one channel, oldest first, and the receivers waiting for one."""

    __slots__ = ("messages", "waiters")

    def __init__(self):
        self.messages: deque[tuple[float, dict]] = deque()  # (expires at, message)
        self.waiters: deque[asyncio.Future] = deque()

    def wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class SweepingInMemoryChannelLayer(BaseChannelLayer):
    extensions = ["groups", "flush"]
    sweep_interval = 1.0

    def __init__(self, expiry=60, group_expiry=86400, capacity=100, channel_capacity=None):
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        self.group_expiry = group_expiry
        self.channels: dict[str, _Channel] = {}
        self.groups: dict[str, dict[str, float]] = {}  # group -> channel -> joined at
        self._last_sweep = 0.0
        self.sweeps = 0  # how many full sweeps ran (tests, and a curious operator)

    # ---- channels ----
    async def send(self, channel, message):
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        self._sweep_if_due()
        self._put(channel, message)

    def _put(self, channel: str, message: dict) -> None:
        queue = self.channels.setdefault(channel, _Channel())
        if len(queue.messages) >= self.get_capacity(channel):
            raise ChannelFull(channel)
        queue.messages.append((time.time() + self.expiry, deepcopy(message)))
        queue.wake_one()

    async def receive(self, channel):
        """The first message that arrives on the channel (one waiting receiver gets each)."""
        self.require_valid_channel_name(channel)
        self._sweep_if_due()
        queue = self.channels.setdefault(channel, _Channel())
        while not queue.messages:
            waiter = asyncio.get_running_loop().create_future()
            queue.waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    queue.wake_one()  # it was woken for a message: hand that on
                else:
                    try:
                        queue.waiters.remove(waiter)
                    except ValueError:
                        pass
                self._forget_if_idle(channel, queue)
                raise
            queue = self.channels.setdefault(channel, queue)
        _expires, message = queue.messages.popleft()
        self._forget_if_idle(channel, queue)
        return message

    def _forget_if_idle(self, channel: str, queue: _Channel) -> None:
        if not queue.messages and not queue.waiters and self.channels.get(channel) is queue:
            del self.channels[channel]

    async def new_channel(self, prefix="specific."):
        return "%s.inmemory!%s" % (prefix, "".join(random.choice(string.ascii_letters) for _ in range(12)))

    # ---- expiry: at most one full pass a sweep_interval ----
    def _sweep_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep >= self.sweep_interval:
            self._last_sweep = now
            self.sweep()

    def sweep(self) -> None:
        """Drop expired messages (their channel leaves every group) and expired group memberships."""
        self.sweeps += 1
        now = time.time()
        for channel, queue in list(self.channels.items()):
            expired = False
            while queue.messages and queue.messages[0][0] < now:
                queue.messages.popleft()
                expired = True
            if expired:
                for members in self.groups.values():
                    members.pop(channel, None)
                self._forget_if_idle(channel, queue)
        timeout = now - self.group_expiry
        for group, members in list(self.groups.items()):
            for channel, joined in list(members.items()):
                if joined < timeout:
                    members.pop(channel, None)
            if not members:
                self.groups.pop(group, None)

    # ---- the flush extension ----
    async def flush(self):
        self.channels = {}
        self.groups = {}

    async def close(self):
        pass

    # ---- the groups extension ----
    async def group_add(self, group, channel):
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self.groups.setdefault(group, {})[channel] = time.time()

    async def group_discard(self, group, channel):
        self.require_valid_channel_name(channel)
        self.require_valid_group_name(group)
        members = self.groups.get(group)
        if members:
            members.pop(channel, None)
            if not members:
                self.groups.pop(group, None)

    async def group_send(self, group, message):
        """Deliver to every member of the group; a full channel misses this message (as in Channels)."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        self._sweep_if_due()
        for channel in list(self.groups.get(group, ())):
            try:
                self._put(channel, message)
            except ChannelFull:
                pass
