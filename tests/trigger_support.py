"""Helpers for tests of the triggers that live outside the runners (schedules, webhooks)."""

import time
import uuid

from confluent_kafka import Consumer

from designer.models import Workflow, WorkflowVersion
from orchestrator.runtime import codec


def definition(slug, trigger):
    return {"slug": slug, "name": slug, "trigger": trigger,
            "steps": [{"id": "echo", "type": "transform", "config": {"output": {"got": "{{ trigger }}"}}}],
            "edges": []}


def make_live(slug, trigger, number=1):
    """A workflow whose live version (in the database only) has `trigger`."""
    workflow, _ = Workflow.objects.get_or_create(slug=slug, defaults={"name": slug})
    version = WorkflowVersion.objects.create(workflow=workflow, number=number, definition=definition(slug, trigger))
    workflow.live_version = version
    workflow.save()
    return workflow


def read_starts(kafka_broker, topic, expected, timeout=15.0):
    """Every StartRun on `topic` (stops after `expected` records or the timeout)."""
    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap_servers, "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    found = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(found) < expected:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            command = codec.decode_run_command(msg.value(), msg.headers())
            assert msg.key().decode() == command.run_id
            found.append(command)
    finally:
        consumer.close()
    return found
