# The run list and dashboard at a million runs (monitor/keyset.py, monitor/stats.py): indexes the
# keyset pages and per-status counts use, on SQLite and PostgreSQL.

import monitor.models
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('monitor', '0006_workflow_alerts'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['created_at', 'id'], name='run_created_id'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['workflow', 'created_at', 'id'], name='run_workflow_created'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['status', 'created_at', 'id'], name='run_status_created'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(monitor.models.TriggerKey('type'), models.F('created_at'), models.F('id'), name='run_trigger_type_created'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(monitor.models.TriggerKey('run_id'), models.F('created_at'), name='run_trigger_parent'),
        ),
    ]
