"""Register the run-retention task with django-celery-beat: hourly, on the `sluice` queue."""

from django.db import migrations

TASK_NAME = "sluice: purge old runs"


def create(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_hour, _ = IntervalSchedule.objects.get_or_create(every=1, period="hours")
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={"task": "monitor.tasks.purge_old_runs", "interval": every_hour, "queue": "sluice",
                  "description": "Deletes finished runs older than SLUICE_RUN_RETENTION_DAYS (Sluice)."},
    )


def remove(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("monitor", "0002_dead_letters_runners_access_audit"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create, remove)]
