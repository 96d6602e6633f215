"""URLs of the REST API (mounted at /api/). Trailing slashes are optional for clients' sake."""

from django.contrib.auth.decorators import login_required
from django.urls import path, re_path
from drf_spectacular.views import SpectacularSwaggerView

from designer import api as designer_api
from monitor import api as monitor_api
from triggers import api as triggers_api

SLUG = r"(?P<slug>[-a-zA-Z0-9_]+)"
RUN_ID = r"(?P<run_id>[-a-zA-Z0-9_.:]+)"

urlpatterns = [
    re_path(r"^workflows/?$", designer_api.WorkflowListView.as_view(), name="api-workflows"),
    re_path(rf"^workflows/{SLUG}/?$", designer_api.WorkflowDetailView.as_view(), name="api-workflow"),
    re_path(rf"^workflows/{SLUG}/versions/?$", designer_api.VersionListView.as_view(), name="api-versions"),
    re_path(rf"^workflows/{SLUG}/versions/(?P<number>[0-9]+)/?$", designer_api.VersionDetailView.as_view(),
            name="api-version"),
    re_path(rf"^workflows/{SLUG}/versions/(?P<number>[0-9]+)/restore/?$", designer_api.RestoreVersionView.as_view(),
            name="api-version-restore"),
    re_path(rf"^workflows/{SLUG}/duplicate/?$", designer_api.DuplicateView.as_view(), name="api-duplicate"),
    re_path(rf"^workflows/{SLUG}/archive/?$", designer_api.ArchiveView.as_view(archive=True), name="api-archive"),
    re_path(rf"^workflows/{SLUG}/unarchive/?$", designer_api.ArchiveView.as_view(archive=False),
            name="api-unarchive"),
    re_path(rf"^workflows/{SLUG}/publish/?$", designer_api.PublishView.as_view(), name="api-publish"),
    re_path(rf"^workflows/{SLUG}/runs/?$", designer_api.StartRunView.as_view(), name="api-start-run"),
    re_path(rf"^workflows/{SLUG}/trigger/?$", designer_api.TriggerStatusView.as_view(), name="api-trigger"),
    re_path(rf"^workflows/{SLUG}/trigger/pause/?$", designer_api.TriggerControlView.as_view(paused=True),
            name="api-trigger-pause"),
    re_path(rf"^workflows/{SLUG}/trigger/resume/?$", designer_api.TriggerControlView.as_view(paused=False),
            name="api-trigger-resume"),
    re_path(rf"^workflows/{SLUG}/webhook-token/?$", triggers_api.WebhookTokenView.as_view(),
            name="api-webhook-token"),
    re_path(r"^step-types/?$", designer_api.StepTypesView.as_view(), name="api-step-types"),
    re_path(r"^runs/?$", monitor_api.RunListView.as_view(), name="api-runs"),
    re_path(rf"^runs/{RUN_ID}/?$", monitor_api.RunDetailView.as_view(), name="api-run"),
    re_path(rf"^runs/{RUN_ID}/cancel/?$", monitor_api.CancelRunView.as_view(), name="api-run-cancel"),
    re_path(rf"^runs/{RUN_ID}/retry/?$", monitor_api.RetryRunView.as_view(), name="api-run-retry"),
    re_path(rf"^runs/{RUN_ID}/signal/?$", monitor_api.SignalRunView.as_view(), name="api-run-signal"),
    re_path(r"^dead-letters/?$", monitor_api.DeadLetterListView.as_view(), name="api-dead-letters"),
    re_path(r"^dead-letters/(?P<pk>[0-9]{1,18})/?$", monitor_api.DeadLetterDetailView.as_view(),
            name="api-dead-letter"),
    re_path(r"^dead-letters/(?P<pk>[0-9]{1,18})/replay/?$", monitor_api.DeadLetterReplayView.as_view(),
            name="api-dead-letter-replay"),
    re_path(r"^dead-letters/(?P<pk>[0-9]{1,18})/discard/?$", monitor_api.DeadLetterDiscardView.as_view(),
            name="api-dead-letter-discard"),
    path("schema/", designer_api.SchemaView.as_view(), name="api-schema"),
    # The docs page is for people in a browser: send them to the login page rather than a 403.
    path("docs/", login_required(SpectacularSwaggerView.as_view(url_name="api-schema")), name="api-docs"),
    # Anything else, newlines included: a JSON 404, never Django's HTML page.
    re_path(r"^[\s\S]*$", designer_api.NotFoundView.as_view(), name="api-not-found"),
]
