from django.urls import path

from . import views

app_name = "designer"

# Workflow URLs take any path segment as the slug, not only a valid slug: a row stored before a
# validation rule tightened must still get working links (to open, fix or archive it).

urlpatterns = [
    path("", views.workflow_list, name="list"),
    path("workflows/new/", views.editor_new, name="new"),
    path("workflows/<str:slug>/duplicate/", views.workflow_duplicate, name="duplicate"),
    path("workflows/<str:slug>/archive/", views.workflow_archive, name="archive"),
    # Editor endpoints not tied to one workflow ("-" is never a whole slug path segment here).
    path("designer/-/validate/", views.validate_definition, name="validate"),
    path("designer/-/panel/", views.panel, name="panel"),
    path("designer/-/create/", views.create, name="create"),
    path("designer/-/runs/<str:run_id>/", views.run_status, name="run_status"),
    path("designer/<str:slug>/", views.editor, name="editor"),
    path("designer/<str:slug>/save/", views.save, name="save"),
    path("designer/<str:slug>/publish/", views.publish, name="publish"),
    path("designer/<str:slug>/versions/", views.versions, name="versions"),
    path("designer/<str:slug>/versions/<int:number>/", views.version_json, name="version"),
    path("designer/<str:slug>/versions/<int:number>/restore/", views.restore, name="restore"),
    path("designer/<str:slug>/diff/", views.diff, name="diff"),
    path("designer/<str:slug>/test-run/", views.test_run, name="test_run"),
    path("designer/<str:slug>/sample-record/", views.sample_record, name="sample_record"),
]
