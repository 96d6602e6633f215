"""The metrics port of a runner or a bridge (`--metrics-port`): /metrics, /healthz, /readyz.

A small threaded WSGI server (the standard library's, as prometheus_client's own
start_http_server uses) in a daemon thread of the process it describes:
- /metrics: this process's registry in Prometheus text format, for whoever access.py allows;
- /healthz: 200 while the process serves HTTP at all (liveness);
- /readyz: 200 when every readiness check answers "ok", else 503; JSON either way.

It binds its port itself (`--metrics-port`) or adopts a listening socket its supervisor bound
and handed down (`--metrics-fd`, as `up` does): a port picked by one process and bound later
by another can be taken in between, for instance as the local end of a client connection.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.conf import settings
from prometheus_client import make_wsgi_app

from . import access
from .health import verdict

log = logging.getLogger(__name__)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        log.debug("metrics port: " + format, *args)


def check_exposure(host: str) -> None:
    """Refuse to serve metrics beyond this machine with nothing guarding them."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not settings.SLUICE_METRICS_TOKEN and not settings.SLUICE_METRICS_ALLOWED_NETWORKS:
        raise ValueError(f"refusing to serve metrics on {host}: set SLUICE_METRICS_TOKEN (or "
                         f"SLUICE_METRICS_ALLOWED_NETWORKS) first, or listen on 127.0.0.1")


def application(readiness: Callable[[], dict[str, str]]):
    exposition = make_wsgi_app()  # the default registry, with prometheus_client's content negotiation

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            if not access.metrics_allowed(environ.get("HTTP_AUTHORIZATION"), environ.get("REMOTE_ADDR"),
                                          loopback_without_token=True):
                start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8")])
                return [access.DENIED.encode()]
            return exposition(environ, start_response)
        if path == "/healthz":
            return _json(start_response, 200, {"status": "alive"})
        if path == "/readyz":
            try:
                checks = readiness()
            except Exception:  # noqa: BLE001 - a failing check is "not ready", never a dead port
                log.exception("readiness check failed")
                checks = {"readiness": "error"}
            code, body = verdict(checks)
            return _json(start_response, code, body)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics, /healthz or /readyz\n"]

    return app


def _json(start_response, code: int, body: dict) -> list[bytes]:
    reason = {200: "OK", 503: "Service Unavailable"}.get(code, "")
    start_response(f"{code} {reason}", [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
    return [json.dumps(body).encode()]


class _AdoptingServer(_Server):
    """A server on a socket that is already bound and listening (inherited from a supervisor)."""

    def __init__(self, fd: int):
        self.adopted = socket.socket(fileno=fd)
        super().__init__(self.adopted.getsockname()[:2], _QuietHandler)

    def server_bind(self):
        # Instead of binding a new socket, take the inherited one; the rest is HTTPServer's and
        # WSGIServer's own bookkeeping (server name and port, the WSGI environ).
        self.socket.close()
        self.socket = self.adopted
        self.server_address = self.socket.getsockname()
        host, port = self.server_address[:2]
        self.server_name, self.server_port = host, port
        self.setup_environ()


def inherited_port(fd: int) -> int:
    """The port of a listening socket handed down as `fd` (the descriptor stays open)."""
    with socket.socket(fileno=os.dup(fd)) as sock:
        return sock.getsockname()[1]


METRICS_FD_HELP = ("Serve /metrics, /healthz and /readyz on this inherited listening socket instead "
                   "(what `up` passes: it binds the ports, so nothing can take them in between).")


class MetricsServer:
    def __init__(self, port: int, readiness: Callable[[], dict[str, str]], host: str = "127.0.0.1",
                 fd: int | None = None):
        if fd is None:
            check_exposure(host)
            self.server = make_server(host, port, application(readiness), server_class=_Server,
                                      handler_class=_QuietHandler)
        else:
            self.server = _AdoptingServer(fd)
            check_exposure(self.server.server_name)
            self.server.set_app(application(readiness))
        self.port = self.server.server_port
        self.host = self.server.server_name if fd is not None else host
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics-port", daemon=True)

    def start(self) -> "MetricsServer":
        self.thread.start()
        log.info("metrics, /healthz and /readyz on http://%s:%d/", self.host, self.port)
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
