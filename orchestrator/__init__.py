"""Sluice: design, run and watch event-driven workflows on Apache Kafka."""

from .celery import app as celery_app

__all__ = ["celery_app"]
