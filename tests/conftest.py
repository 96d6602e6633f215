"""Shared fixtures: a real embedded broker for the session, fresh topics per test."""

import os
import tempfile
import uuid

import pytest

# Keep tests away from the developer's ./var (secret key, SQLite, broker data).
os.environ.setdefault("SLUICE_DATA_DIR", tempfile.mkdtemp(prefix="sluice-test-"))


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """The embedded Kafka-compatible broker on a free port, for the whole test session."""
    from orchestrator.runtime.broker import EmbeddedBroker, free_port

    broker = EmbeddedBroker(tmp_path_factory.mktemp("broker"), free_port())
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def kafka(kafka_broker, settings):
    """Point Sluice at the session broker with a topic prefix of its own, topics created.

    Each test gets fresh topics, so tests never see each other's records.
    """
    from confluent_kafka.admin import AdminClient

    from orchestrator.runtime import commands
    from orchestrator.runtime.topics import Topics, ensure_topics

    settings.KAFKA_BOOTSTRAP_SERVERS = kafka_broker.bootstrap_servers
    settings.KAFKA_CLIENT_CONFIG = {}
    settings.SLUICE_TOPIC_PREFIX = f"t{uuid.uuid4().hex[:8]}."
    settings.SLUICE_PARTITIONS = 2
    settings.SLUICE_EMBEDDED_BROKER = True
    topics = Topics(settings.SLUICE_TOPIC_PREFIX)
    ensure_topics(AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers}),
                  topics.layout(settings.SLUICE_PARTITIONS))
    commands.reset_producer()
    yield topics
    commands.reset_producer()


@pytest.fixture
def roles(db):
    """The role groups (Viewer, Author, Publisher, Operator). A migration creates them, but a
    transactional test flushes the database afterwards, so tests that use them ask for them."""
    from monitor.permissions import ensure_roles

    ensure_roles()


pytest_plugins = ["tests.live", "tests.runtime_support"]
