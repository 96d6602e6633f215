"""The REST API as the CLI uses it: JSON in and out, every failure turned into one sentence.

The server answers errors as `{"detail", "code", "errors": [{"path", "step_id", "message", ...}]}`
(webbase/api.py); `ApiError` keeps that shape so commands can show each problem with its field
path, and with the file and line it came from when the request carried a workflow file.
"""

from __future__ import annotations

from typing import Any

from . import __version__
from .config import Server
from .errors import CliError

TIMEOUT_SECONDS = 30.0


def api_path(*parts) -> str:
    """`api_path("runs", run_id, "cancel")` -> "runs/<id>/cancel/", each part quoted.

    Slugs and ids come from the command line: quoting keeps `sluice runs get ../x` a run id.
    """
    from urllib.parse import quote

    return "".join(quote(str(part), safe="") + "/" for part in parts)


class ApiError(CliError):
    """The server refused a request (any answer but 2xx)."""

    def __init__(self, status: int, message: str, problems: list[dict] | None = None, code: str = "error",
                 body: Any = None):
        super().__init__(message, problems, code)
        self.status = status
        self.body = body if isinstance(body, dict) else {}


class Client:
    def __init__(self, server: Server, timeout: float = TIMEOUT_SECONDS):
        import httpx

        self.server = server
        self._httpx = httpx
        self._http = httpx.Client(
            base_url=f"{server.url}/api/",
            headers={"Authorization": f"Token {server.token}", "Accept": "application/json",
                     "User-Agent": f"sluice-cli/{__version__}"},
            timeout=timeout,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def get(self, path: str, params: dict | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body={} if body is None else body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body=body)

    def request(self, method: str, path: str, body: Any = None, params: dict | None = None) -> Any:
        params = {key: value for key, value in (params or {}).items() if value not in (None, "")}
        try:
            response = self._http.request(method, path.lstrip("/"), json=body, params=params)
        except self._httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise CliError(f"could not reach the Sluice server at {self.server.url}: {reason}",
                           code="unreachable") from None
        if 200 <= response.status_code < 300:
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                raise CliError(f"the server at {self.server.url} answered {method} /api/{path.lstrip('/')} "
                               "with something that is not JSON: is SLUICE_URL the Sluice site?") from None
        raise self._error(method, path, response)

    def _error(self, method: str, path: str, response) -> ApiError:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        detail = body.get("detail") if isinstance(body, dict) else None
        problems = body.get("errors") if isinstance(body, dict) and isinstance(body.get("errors"), list) else []
        code = body.get("code", "error") if isinstance(body, dict) else "error"
        where = f"/api/{path.lstrip('/')}"
        if status == 401:
            reason = f" ({detail.rstrip('.')})" if detail else ""
            message = (f"the server at {self.server.url} did not accept the token{reason}: "
                       "run `sluice login` or set SLUICE_TOKEN")
            return ApiError(status, message, [], "unauthenticated", body)
        if not detail:
            message = f"the server answered {status} {response.reason_phrase} to {method} {where}"
            return ApiError(status, message, [], code, body)
        if status == 404 and detail.startswith("No API endpoint at"):
            message = (f"the server at {self.server.url} has no endpoint {where}: "
                       "it runs a Sluice older than this client")
            return ApiError(status, message, [], "no_endpoint", body)
        # A body whose only problem repeats the detail adds nothing: keep the sentence alone.
        if len(problems) == 1 and not problems[0].get("path") and problems[0].get("message") == detail:
            problems = []
        return ApiError(status, detail, problems, code, body)
