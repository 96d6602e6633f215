"""Where the CLI finds its server and token: the environment first, then `sluice login`'s file.

SLUICE_URL and SLUICE_TOKEN win over the file, each on its own, so CI can set them without a
login. The file is `$XDG_CONFIG_HOME/sluice/config.json` (`~/.config/sluice/config.json` when
XDG_CONFIG_HOME is unset), written with mode 0600 in a 0700 directory because it holds a token
that acts as its user.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .errors import UsageError

URL_VARIABLE = "SLUICE_URL"
TOKEN_VARIABLE = "SLUICE_TOKEN"


@dataclass(frozen=True)
class Server:
    url: str  # the site root, e.g. http://127.0.0.1:8000 (the API is under /api/)
    token: str


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    # The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "sluice" / "config.json"


def normalise_url(url: str) -> str:
    """The site root without a trailing slash; a usage error for anything but http(s)://host."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"{url!r} is not a server URL: give it as http://HOST:PORT or https://HOST")
    if url.endswith("/api"):
        url = url[: -len("/api")]
    return url


def read_file() -> dict:
    path = config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise UsageError(f"{path} is not valid JSON: run `sluice login` again to rewrite it") from None
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"warning: {path} can be read by other users; run `chmod 600 {path}`", file=sys.stderr)
    return data if isinstance(data, dict) else {}


def server() -> Server:
    """The server to talk to, or a usage error that says how to configure one."""
    stored = read_file()
    url = os.environ.get(URL_VARIABLE) or stored.get("url") or ""
    token = os.environ.get(TOKEN_VARIABLE) or stored.get("token") or ""
    if not url or not token:
        missing = " and ".join(name for name, value in ((URL_VARIABLE, url), (TOKEN_VARIABLE, token)) if not value)
        raise UsageError(f"no Sluice server configured ({missing} not set): run `sluice login` "
                         f"or set {URL_VARIABLE} and {TOKEN_VARIABLE}")
    return Server(normalise_url(url), token.strip())


def write(url: str, token: str) -> Path:
    """Store the server and token, readable by the user alone (written whole, then renamed)."""
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    # O_EXCL + mode 0600 at creation: the token is never readable by others, not even briefly.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump({"url": url, "token": token}, handle, indent=2)
            handle.write("\n")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def remove() -> Path | None:
    path = config_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    return path
