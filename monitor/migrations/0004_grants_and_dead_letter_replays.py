"""Workflow grants name a right (view, edit, publish, operate); dead letters name their workflow
and remember what their replay did.

Earlier grants meant "watch the runs": they become `view` grants. A grant naming both a user and
a group becomes two grants, since a grant now names exactly one of them.
"""

from django.conf import settings
from django.db import migrations, models


def split_grants_naming_both(apps, schema_editor):
    WorkflowAccess = apps.get_model("monitor", "WorkflowAccess")
    for grant in WorkflowAccess.objects.filter(user__isnull=False, group__isnull=False):
        WorkflowAccess.objects.create(workflow_id=grant.workflow_id, group_id=grant.group_id,
                                      permission=grant.permission)
        grant.group_id = None
        grant.save(update_fields=["group"])


def drop_duplicate_grants(apps, schema_editor):
    WorkflowAccess = apps.get_model("monitor", "WorkflowAccess")
    seen = set()
    for grant in WorkflowAccess.objects.order_by("id"):
        key = (grant.workflow_id, grant.user_id, grant.group_id, grant.permission)
        if key in seen:
            grant.delete()
        seen.add(key)


class Migration(migrations.Migration):

    dependencies = [
        ('auth', '0012_alter_user_first_name_max_length'),
        ('designer', '0001_initial'),
        ('monitor', '0003_schedule_run_retention'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='workflowaccess',
            options={'verbose_name': 'workflow grant', 'verbose_name_plural': 'workflow grants'},
        ),
        migrations.RemoveConstraint(
            model_name='workflowaccess',
            name='workflow_access_names_user_or_group',
        ),
        migrations.AddField(
            model_name='deadletter',
            name='replay',
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='deadletter',
            name='workflow',
            field=models.CharField(blank=True, db_index=True, max_length=100),
        ),
        migrations.AddField(
            model_name='workflowaccess',
            name='permission',
            field=models.CharField(choices=[('view', 'view the workflow and its runs'), ('edit', 'edit (save, restore, archive a draft)'), ('publish', 'publish, unpublish, rotate the webhook token'), ('operate', 'start, cancel, retry and signal runs; handle its dead letters')], default='view', max_length=16),
        ),
        migrations.RunPython(split_grants_naming_both, migrations.RunPython.noop),
        migrations.RunPython(drop_duplicate_grants, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name='workflowaccess',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('group__isnull', True), ('user__isnull', False)), models.Q(('group__isnull', False), ('user__isnull', True)), _connector='OR'), name='workflow_access_names_user_or_group'),
        ),
        migrations.AddConstraint(
            model_name='workflowaccess',
            constraint=models.UniqueConstraint(condition=models.Q(('user__isnull', False)), fields=('workflow', 'user', 'permission'), name='unique_user_grant'),
        ),
        migrations.AddConstraint(
            model_name='workflowaccess',
            constraint=models.UniqueConstraint(condition=models.Q(('group__isnull', False)), fields=('workflow', 'group', 'permission'), name='unique_group_grant'),
        ),
    ]
