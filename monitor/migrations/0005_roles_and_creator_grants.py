"""The roles as groups (Viewer, Author, Publisher, Operator) with their model permissions, an
`edit` grant for the creator of each existing workflow (creating one grants it from now on), and
the workflow of each existing dead letter.

The role list is a copy of monitor.permissions.ROLES as it was when this migration was written
(migrations are history); a test keeps the two in step.
"""

import json
import re

from django.contrib.auth.management import create_permissions
from django.db import migrations

_SEE = ["designer.view_workflow", "designer.view_workflowversion", "monitor.view_run", "monitor.view_steprun",
        "monitor.view_historyentry"]
ROLES = {
    "Viewer": _SEE,
    "Author": _SEE + ["designer.add_workflow", "designer.change_workflow"],
    "Publisher": _SEE + ["designer.publish_workflow"],
    "Operator": _SEE + ["monitor.operate_run", "monitor.view_deadletter", "monitor.view_auditentry",
                        "monitor.view_runnerprocess"],
}
_FILTER_REASON = re.compile(r"filter of ([a-z0-9][a-z0-9-]*) failed")


def create_roles(apps, schema_editor):
    # Permissions are normally created after all migrations ran (post_migrate): make sure the
    # ones the roles need exist now, on a fresh database as on an old one.
    for label in ("designer", "monitor"):
        app_config = apps.get_app_config(label)
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, perms in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        for perm in perms:
            app_label, codename = perm.split(".")
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


def grant_creators(apps, schema_editor):
    Workflow = apps.get_model("designer", "Workflow")
    WorkflowAccess = apps.get_model("monitor", "WorkflowAccess")
    for workflow in Workflow.objects.exclude(created_by=None):
        WorkflowAccess.objects.get_or_create(workflow=workflow, user_id=workflow.created_by_id, permission="edit")


def attribute_dead_letters(apps, schema_editor):
    DeadLetter = apps.get_model("monitor", "DeadLetter")
    Run = apps.get_model("monitor", "Run")
    for letter in DeadLetter.objects.filter(workflow=""):
        slug = ""
        match = _FILTER_REASON.search(letter.error or "")
        if match:
            slug = match.group(1)
        else:
            try:
                value = json.loads(letter.value)
                slug = value.get("workflow", "") if isinstance(value, dict) and isinstance(value.get("workflow"), str) else ""
            except ValueError:
                pass
            if not slug and letter.key:
                slug = Run.objects.filter(id=letter.key).values_list("workflow", flat=True).first() or ""
        if slug:
            DeadLetter.objects.filter(pk=letter.pk).update(workflow=slug[:100])


class Migration(migrations.Migration):
    dependencies = [
        ("monitor", "0004_grants_and_dead_letter_replays"),
        ("designer", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(create_roles, remove_roles),
        migrations.RunPython(grant_creators, migrations.RunPython.noop),
        migrations.RunPython(attribute_dead_letters, migrations.RunPython.noop),
    ]
