from django.urls import path

from . import views

app_name = "monitor"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("dashboard/data/", views.dashboard_data, name="dashboard_data"),
    path("runs/", views.run_list, name="run_list"),
    path("runs/<str:run_id>/", views.run_detail, name="run_detail"),
    path("runs/<str:run_id>/cancel/", views.run_cancel, name="run_cancel"),
    path("runs/<str:run_id>/retry/", views.run_retry, name="run_retry"),
    path("runs/<str:run_id>/rerun/", views.run_rerun, name="run_rerun"),
    path("runs/<str:run_id>/signal/", views.run_signal, name="run_signal"),
    path("dead-letters/", views.dead_letters, name="dead_letters"),
    path("dead-letters/replay-all/", views.dead_letters_replay_all, name="dead_letters_replay_all"),
    path("dead-letters/<int:pk>/", views.dead_letter_detail, name="dead_letter_detail"),
    path("dead-letters/<int:pk>/replay/", views.dead_letter_replay, name="dead_letter_replay"),
    path("dead-letters/<int:pk>/discard/", views.dead_letter_discard, name="dead_letter_discard"),
    path("audit/", views.audit_log, name="audit"),
]
