"""Websockets of the monitor: one run's history (run detail) and every visible run (lists, dashboard).

Both require a signed-in user and check workflow visibility (monitor.permissions, the same
functions as the pages and the API) before joining any group; a refused socket is closed before
it is accepted, so it never receives an event.

Run sockets (`ws/runs/<run_id>/?since=N`, N = the highest seq the client has) catch up: the
server sends every event after N (projected rows plus this process's buffer of events the
projector may not have written yet), then {"type": "caught_up", "seq": M}, then live events.
The socket registers with the fan-out before the catch-up query and holds the live frames
that come during a catch-up until it is done, so nothing falls in between; live events at or
below the last seq sent are dropped, so the client sees each seq once, in order (it still
dedupes, to be safe). A client can also ask again with {"type": "catch_up", "since": N}.

Live frames arrive already serialised (monitor.live builds each event's JSON once per process):
run sockets get `{"type": "history", "event": {...}}` per event, feed sockets
`{"type": "history_batch", "events": [...]}` per tick. A socket whose client does not read
fast enough (more than live.MAX_BACKLOG_BYTES unsent) is closed with live.CLOSE_TOO_SLOW; the
client reconnects and catches up.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from . import live
from .models import Run
from .permissions import can_view_workflow, visible_workflow_slugs

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


class _LiveConsumer(AsyncJsonWebsocketConsumer):
    async def send_live(self, text: str) -> bool:
        """Send a pre-serialised frame, or close the socket if its client has fallen too far behind."""
        if getattr(self, "too_slow", False):
            return False
        if live.backlog_bytes(self.base_send) > live.MAX_BACKLOG_BYTES:
            self.too_slow = True
            await self.close(code=live.CLOSE_TOO_SLOW)
            return False
        await self.send(text_data=text)
        return True


@database_sync_to_async
def _run_if_visible(user, run_id: str) -> tuple[Run | None, int]:
    run = Run.objects.filter(id=run_id).first()
    if run is None:
        return None, CLOSE_NOT_FOUND
    if not can_view_workflow(user, run.workflow):
        return None, CLOSE_FORBIDDEN
    return run, 0


@database_sync_to_async
def _history_after(run: Run, since: int) -> list[dict]:
    return [live.entry_payload(entry, run) for entry in run.history.filter(seq__gt=since).order_by("seq")]


class RunHistoryConsumer(_LiveConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if not (user and user.is_authenticated):
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.run_id = self.scope["url_route"]["kwargs"]["run_id"]
        self.run, refusal = await _run_if_visible(user, self.run_id)
        if refusal:
            await self.close(code=refusal)
            return
        since = _query_param(self.scope, "since") or "0"
        self.last_sent = 0
        self.held: list[tuple[int, str]] = []  # live frames that came during a catch-up
        self.catching_up = True
        self.fanout = live.ensure_started()
        live.watch_run(self, self.run_id)  # before the catch-up query: nothing falls in between
        await self.accept()
        if not since.isdigit():
            await self.send_json({"type": "error", "error": "since: must be a non-negative integer (the last seq you have)"})
            await self._go_live()
            return
        await self._catch_up(int(since))

    async def disconnect(self, code):
        if getattr(self, "fanout", None) is not None:
            live.unwatch_run(self, self.run_id)

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict) or content.get("type") != "catch_up":
            await self.send_json({"type": "error", "error": 'expected {"type": "catch_up", "since": <seq>}'})
            return
        since = content.get("since", 0)
        if not isinstance(since, int) or isinstance(since, bool) or since < 0:
            await self.send_json({"type": "error", "error": "since: must be a non-negative integer (the last seq you have)"})
            return
        await self._catch_up(since)

    async def _catch_up(self, since: int) -> None:
        self.catching_up = True
        try:
            events = {event["seq"]: event for event in await _history_after(self.run, since)}
            for event in self.fanout.recent(self.run_id, since):
                events.setdefault(event["seq"], event)
            for seq in sorted(events):
                await self.send_json({"type": "history", "event": events[seq]})
            self.last_sent = max(self.last_sent, max(events, default=since))
            await self.send_json({"type": "caught_up", "seq": self.last_sent})
        finally:
            await self._go_live()

    async def _go_live(self) -> None:
        # Frames held during the catch-up first; any that arrive meanwhile join the list, and
        # nothing awaits between the last check and the switch, so none can overtake another.
        while self.held:
            held, self.held = self.held, []
            for seq, text in held:
                await self._send_event(seq, text)
        self.catching_up = False

    async def deliver(self, seq: int, text: str) -> None:
        """Called by the fan-out (live.py) with each event of this run, in order, as frame text."""
        if getattr(self, "too_slow", False):
            return
        if self.catching_up:
            if len(self.held) >= live.BUFFER_PER_RUN:  # a catch-up that never ends: let it reconnect
                self.too_slow = True
                await self.close(code=live.CLOSE_TOO_SLOW)
                return
            self.held.append((seq, text))
            return
        await self._send_event(seq, text)

    async def _send_event(self, seq: int, text: str) -> None:
        if seq <= self.last_sent:
            return  # already sent by the catch-up (or a redelivery)
        if await self.send_live(text):
            self.last_sent = seq


class RunsFeedConsumer(_LiveConsumer):
    """`ws/monitor/` (optionally `?workflow=slug`): events of every run the user may watch."""

    async def connect(self):
        user = self.scope.get("user")
        if not (user and user.is_authenticated):
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        slugs = await database_sync_to_async(visible_workflow_slugs)(user)
        if slugs is not None and not slugs:
            await self.close(code=CLOSE_FORBIDDEN)  # may watch no workflow at all, like the monitor pages
            return
        wanted = _query_param(self.scope, "workflow")
        if wanted:
            if slugs is not None and wanted not in slugs:
                await self.close(code=CLOSE_FORBIDDEN)
                return
            self.feed_groups = [live.workflow_group(wanted)]
        elif slugs is None:
            self.feed_groups = [live.ALL_RUNS_GROUP]
        else:
            self.feed_groups = [live.workflow_group(slug) for slug in sorted(slugs)]
        live.ensure_started()
        await self.accept()
        # Not channel-layer groups: the fan-out writes each tick's frame straight to these sockets.
        live.watch_feed(self, self.feed_groups)

    async def disconnect(self, code):
        live.unwatch_feed(self, getattr(self, "feed_groups", []))

    async def send_feed_frame(self, text: str) -> None:
        if not await self.send_live(text):
            live.unwatch_feed(self, self.feed_groups)  # closed as too slow: no more frames

    async def receive_json(self, content, **kwargs):
        await self.send_json({"type": "error", "error": "this socket only sends; nothing to receive"})


def _query_param(scope, name: str) -> str:
    from urllib.parse import parse_qs

    values = parse_qs(scope.get("query_string", b"").decode()).get(name)
    return values[0] if values else ""
