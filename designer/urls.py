from django.urls import path

from . import views

app_name = "designer"

urlpatterns = [
    path("", views.workflow_list, name="list"),
    path("workflows/new/", views.editor_new, name="new"),
    path("workflows/<slug:slug>/duplicate/", views.workflow_duplicate, name="duplicate"),
    path("workflows/<slug:slug>/archive/", views.workflow_archive, name="archive"),
    # Editor endpoints not tied to one workflow ("-" is never a whole slug path segment here).
    path("designer/-/validate/", views.validate_definition, name="validate"),
    path("designer/-/panel/", views.panel, name="panel"),
    path("designer/-/create/", views.create, name="create"),
    path("designer/-/runs/<str:run_id>/", views.run_status, name="run_status"),
    path("designer/<slug:slug>/", views.editor, name="editor"),
    path("designer/<slug:slug>/save/", views.save, name="save"),
    path("designer/<slug:slug>/publish/", views.publish, name="publish"),
    path("designer/<slug:slug>/versions/", views.versions, name="versions"),
    path("designer/<slug:slug>/versions/<int:number>/", views.version_json, name="version"),
    path("designer/<slug:slug>/versions/<int:number>/restore/", views.restore, name="restore"),
    path("designer/<slug:slug>/diff/", views.diff, name="diff"),
    path("designer/<slug:slug>/test-run/", views.test_run, name="test_run"),
    path("designer/<slug:slug>/sample-record/", views.sample_record, name="sample_record"),
]
