"""A local HTTP server that echoes what it was sent, as some real APIs do in their answers and
error pages: the request's Authorization header comes back in the body and in a response
header, the query string in the body. `/fail` answers 500 with the same echo."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest


class EchoHandler(BaseHTTPRequestHandler):
    # Authorization headers received, so a test can tell the secret really was sent.
    received: list[str] = []

    def log_message(self, *args):  # keep test output clean
        pass

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        url = urlsplit(self.path)
        authorization = self.headers.get("Authorization", "")
        EchoHandler.received.append(authorization)
        payload = json.dumps({"path": url.path, "query": parse_qs(url.query), "authorization": authorization}).encode()
        self.send_response(500 if url.path == "/fail" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Echo-Authorization", authorization)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _handle


@pytest.fixture
def echo_server():
    EchoHandler.received = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
