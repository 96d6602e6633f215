"""The web process's operations endpoints: /metrics, /healthz, /readyz.

No login: probes and Prometheus carry no session. /metrics is guarded by access.py (bearer token
or allowed networks; nobody by default); /healthz and /readyz say only "alive" / "ready" and
the names of failing checks, with the reasons in the log.
"""

from __future__ import annotations

from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from . import access, health


@never_cache
@require_GET
def healthz(request):
    """Liveness: the process answers HTTP. Checks nothing else, so a database or broker outage
    never gets a healthy web process restarted."""
    return JsonResponse({"status": "alive"})


@never_cache
@require_GET
def readyz(request):
    """Readiness: the database and the Kafka broker answer."""
    code, body = health.verdict({"database": health.database(), "broker": health.broker()})
    return JsonResponse(body, status=code)


@never_cache
@require_GET
def metrics(request):
    if not access.metrics_allowed(request.META.get("HTTP_AUTHORIZATION"), request.META.get("REMOTE_ADDR")):
        return HttpResponse(access.DENIED, status=403, content_type="text/plain; charset=utf-8")
    from monitor.metrics import install_web

    install_web()
    encoder, content_type = choose_encoder(request.META.get("HTTP_ACCEPT"))
    return HttpResponse(encoder(REGISTRY), content_type=content_type)
