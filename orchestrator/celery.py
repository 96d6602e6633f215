"""Celery application: schedules (django-celery-beat) and housekeeping tasks.

The broker is chosen in settings (CELERY_BROKER_URL): kombu's filesystem transport in the
data dir on the embedded default, kombu's Kafka transport on a cluster, or what you name.
"""

import os
from pathlib import Path

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")

app = Celery("sluice")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def make_queue_folders(sender: Celery, **_kwargs) -> None:
    """kombu's filesystem transport expects its folders to exist; every process that sends or
    reads (beat, worker, anything calling a task) gets here before its first connection."""
    if not str(sender.conf.broker_url or "").startswith("filesystem:"):
        return
    options = sender.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)
