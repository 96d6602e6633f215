"""The metrics port of a runner or a bridge (`--metrics-port`): /metrics, /healthz, /readyz.

A small threaded WSGI server (the standard library's, as prometheus_client's own
start_http_server uses) in a daemon thread of the process it describes:
- /metrics: this process's registry in Prometheus text format, for whoever access.py allows;
- /healthz: 200 while the process serves HTTP at all (liveness);
- /readyz: 200 when every readiness check answers "ok", else 503; JSON either way.
"""

from __future__ import annotations

import ipaddress
import json
import logging
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


class MetricsServer:
    def __init__(self, port: int, readiness: Callable[[], dict[str, str]], host: str = "127.0.0.1"):
        check_exposure(host)
        self.server = make_server(host, port, application(readiness), server_class=_Server,
                                  handler_class=_QuietHandler)
        self.port = self.server.server_port
        self.host = host
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics-port", daemon=True)

    def start(self) -> "MetricsServer":
        self.thread.start()
        log.info("metrics, /healthz and /readyz on http://%s:%d/", self.host, self.port)
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
