"""First-run set-up for `manage.py up`: topics, database, examples, the first admin user.

Each function is safe to call on every start: it does only what is still missing.
"""

from __future__ import annotations

import logging
import secrets
import time

import httpx
from django.conf import settings
from django.core.management import call_command, get_commands

from .runtime.topics import Topics, ensure_topics

ADMIN_USERNAME = "admin"


def create_topics(queues: tuple[str, ...] = ("default",)) -> list[str]:
    """Create Sluice's topics on the configured cluster; returns the names that were new."""
    from confluent_kafka.admin import AdminClient

    from .runtime.kafka import base_config

    admin = AdminClient(base_config())
    layout = Topics(settings.SLUICE_TOPIC_PREFIX).layout(settings.SLUICE_PARTITIONS, queues)
    return ensure_topics(admin, layout, settings.SLUICE_REPLICATION_FACTOR)


def migrate() -> None:
    call_command("migrate", interactive=False, verbosity=0)


def load_examples(stdout) -> bool:
    """Load and publish the bundled example workflows, if the command is installed."""
    if "load_examples" not in get_commands():
        stdout.write("load_examples is not installed; starting without example workflows\n")
        return False
    call_command("load_examples", publish=True, stdout=stdout)
    return True


def ensure_admin() -> str | None:
    """Create the superuser `admin` when the database has no user at all.

    Returns the generated password (the caller prints it once, to the terminal only), or None
    when users already exist. There is never a fixed default password.
    """
    from django.contrib.auth import get_user_model

    User = get_user_model()
    if User.objects.exists():
        return None
    password = secrets.token_urlsafe(18)
    User.objects.create_superuser(ADMIN_USERNAME, email="", password=password)
    return password


def ensure_retention_schedule() -> None:
    """Schedule the daily purge of old run rows (SLUICE_RUN_RETENTION_DAYS; 0 turns it off)."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    enabled = settings.SLUICE_RUN_RETENTION_DAYS > 0
    schedule, _ = CrontabSchedule.objects.get_or_create(
        minute="17", hour="3", day_of_month="*", month_of_year="*", day_of_week="*", timezone="UTC"
    )
    PeriodicTask.objects.update_or_create(
        name="sluice:retention",
        defaults={"task": "orchestrator.tasks.purge_old_runs", "crontab": schedule, "interval": None,
                  "queue": "sluice", "enabled": enabled,
                  "description": "Delete run rows older than SLUICE_RUN_RETENTION_DAYS"},
    )


def wait_for_http(url: str, timeout: float, stop=None) -> bool:
    """Poll `url` until it answers 200 (or `stop` is set / time runs out)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per poll is noise
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (stop and stop.is_set()):
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def box(lines: list[str]) -> str:
    width = max(len(line) for line in lines)
    edge = "+" + "-" * (width + 2) + "+"
    return "\n".join([edge, *[f"| {line:<{width}} |" for line in lines], edge])
