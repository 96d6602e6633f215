from django.urls import path

from webbase import converters  # noqa: F401  (registers the "any" converter)

from . import alerts, views

app_name = "designer"

# Workflow URLs take any text as the slug (webbase.converters), not only a valid slug: a row stored
# before a validation rule tightened must still get working links, to open, fix or archive it.
# The editor page comes last, so "<slug>/save/" is the save of <slug>.

urlpatterns = [
    path("", views.workflow_list, name="list"),
    path("workflows/new/", views.editor_new, name="new"),
    # The definition's JSON Schema, for editors (no login: it is the public format, no data).
    path("schema/workflow.json", views.workflow_schema, name="workflow_schema"),
    path("workflows/<any:slug>/duplicate/", views.workflow_duplicate, name="duplicate"),
    path("workflows/<any:slug>/archive/", views.workflow_archive, name="archive"),
    # Editor endpoints not tied to one workflow ("-" is never a slug).
    path("designer/-/validate/", views.validate_definition, name="validate"),
    path("designer/-/panel/", views.panel, name="panel"),
    path("designer/-/create/", views.create, name="create"),
    path("designer/<any:slug>/save/", views.save, name="save"),
    path("designer/<any:slug>/publish/", views.publish, name="publish"),
    path("designer/<any:slug>/versions/", views.versions, name="versions"),
    path("designer/<any:slug>/versions/<int:number>/", views.version_json, name="version"),
    path("designer/<any:slug>/versions/<int:number>/restore/", views.restore, name="restore"),
    path("designer/<any:slug>/diff/", views.diff, name="diff"),
    path("designer/<any:slug>/test-run/", views.test_run, name="test_run"),
    path("designer/<any:slug>/trigger/", views.trigger_state, name="trigger_state"),
    path("designer/<any:slug>/trigger/pause/", views.trigger_control, {"paused": True}, name="trigger_pause"),
    path("designer/<any:slug>/trigger/resume/", views.trigger_control, {"paused": False}, name="trigger_resume"),
    path("designer/<any:slug>/sample-record/", views.sample_record, name="sample_record"),
    path("designer/<any:slug>/alerts/", alerts.alert_settings, name="alerts"),
    path("designer/<any:slug>/", views.editor, name="editor"),
]
