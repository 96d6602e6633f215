from django.urls import path

from webbase import converters  # noqa: F401  (registers the "any" converter)

from . import views

app_name = "monitor"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("dashboard/data/", views.dashboard_data, name="dashboard_data"),
    path("runs/", views.run_list, name="run_list"),
    # Run ids are whatever a start command named (any text, webbase.converters, so every stored id gets a
    # link); the actions come first, so "<id>/cancel/" is the cancel of <id>.
    path("runs/<any:run_id>/cancel/", views.run_cancel, name="run_cancel"),
    path("runs/<any:run_id>/retry/", views.run_retry, name="run_retry"),
    path("runs/<any:run_id>/rerun/", views.run_rerun, name="run_rerun"),
    path("runs/<any:run_id>/signal/", views.run_signal, name="run_signal"),
    path("runs/<any:run_id>/", views.run_detail, name="run_detail"),
    path("dead-letters/", views.dead_letters, name="dead_letters"),
    path("dead-letters/replay-all/", views.dead_letters_replay_all, name="dead_letters_replay_all"),
    path("dead-letters/<int:pk>/", views.dead_letter_detail, name="dead_letter_detail"),
    path("dead-letters/<int:pk>/replay/", views.dead_letter_replay, name="dead_letter_replay"),
    path("dead-letters/<int:pk>/discard/", views.dead_letter_discard, name="dead_letter_discard"),
    path("audit/", views.audit_log, name="audit"),
]
