from django.contrib import admin
from django.urls import include, path

from orchestrator.observability import views as observability

urlpatterns = [
    # Operations (docs/operations.md): liveness, readiness, Prometheus metrics.
    path("healthz", observability.healthz, name="healthz"),
    path("readyz", observability.readyz, name="readyz"),
    path("metrics", observability.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", include("orchestrator.api_urls")),
    path("hooks/", include("triggers.urls")),
    path("", include("designer.urls")),
    path("monitor/", include("monitor.urls")),
]
