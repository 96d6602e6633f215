"""Who may read metrics: a bearer token, or a client address in an allowed network.

One rule for the web's /metrics and for the metrics ports of runners and bridges
(docs/operations.md, "Protecting /metrics"):
- `Authorization: Bearer <SLUICE_METRICS_TOKEN>` (compared in constant time), or
- a client address inside one of SLUICE_METRICS_ALLOWED_NETWORKS (CIDRs, comma separated).
A metrics port with no token configured also serves loopback clients: it listens on 127.0.0.1
unless told otherwise, and refuses to listen elsewhere without a token or networks
(server.check_exposure). The web's /metrics never has that default: behind a reverse proxy on
the same host, every client would look like loopback.
"""

from __future__ import annotations

import hmac
import ipaddress
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@lru_cache(maxsize=8)
def parse_networks(values: tuple[str, ...]) -> tuple:
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError as exc:
            raise ImproperlyConfigured(f"SLUICE_METRICS_ALLOWED_NETWORKS: {value!r} is not a network ({exc})") from exc
    return tuple(networks)


def allowed_networks() -> tuple:
    return parse_networks(tuple(settings.SLUICE_METRICS_ALLOWED_NETWORKS))


def token_matches(authorization: str | None) -> bool:
    token = settings.SLUICE_METRICS_TOKEN
    if not token or not authorization:
        return False
    scheme, _, presented = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())


def address_in(address: str | None, networks) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def metrics_allowed(authorization: str | None, client: str | None, loopback_without_token: bool = False) -> bool:
    """True when this request may read metrics (see the module's docstring)."""
    if token_matches(authorization):
        return True
    if address_in(client, allowed_networks()):
        return True
    return loopback_without_token and not settings.SLUICE_METRICS_TOKEN and address_in(client, LOOPBACK)


DENIED = ("metrics need `Authorization: Bearer <SLUICE_METRICS_TOKEN>` or a client address in "
          "SLUICE_METRICS_ALLOWED_NETWORKS (docs/operations.md)\n")
