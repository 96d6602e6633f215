"""designer.services: the rules shared by the API, the editor and the CLI."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from designer import services
from designer.models import Workflow
from monitor.models import Run
from orchestrator.messages import LiveVersion, PublishedDefinition, StartRun
from orchestrator.runtime import codec, commands
from orchestrator.runtime.broker import free_port
from orchestrator.spec import InvalidDefinition
from tests.test_api_workflows import definition, read_records


@pytest.fixture
def ada(db):
    return get_user_model().objects.create_user("ada", password="pw-not-used-123")


@pytest.fixture
def bob(db):
    return get_user_model().objects.create_user("bob", password="pw-not-used-123")


def test_create_stores_version_one_as_draft(ada):
    version = services.create_workflow(definition(description="says hi"), ada, message="first")
    workflow = version.workflow
    assert (workflow.slug, workflow.name, workflow.description) == ("greet", "Greet", "says hi")
    assert (version.number, version.message, version.created_by) == (1, "first", ada)
    assert services.version_status(version) == services.DRAFT and workflow.live_version is None


def test_create_refuses_invalid_and_duplicate(ada):
    with pytest.raises(InvalidDefinition) as invalid:
        services.create_workflow(definition(steps=[{"id": "a", "type": "teleport"}], edges=[]), ada)
    assert any(p.path == "steps[0].type" and p.step_id == "a" for p in invalid.value.problems)
    services.create_workflow(definition(), ada)
    with pytest.raises(services.SlugTaken) as taken:
        services.create_workflow(definition(), ada)
    assert taken.value.problems[0].path == "slug"
    assert Workflow.objects.count() == 1


def test_definition_is_copied_not_shared(ada):
    data = definition()
    version = services.create_workflow(data, ada)
    data["steps"].clear()
    version.refresh_from_db()
    assert len(version.definition["steps"]) == 3


def test_save_numbers_versions_and_detects_conflicts(ada, bob):
    workflow = services.create_workflow(definition(), ada).workflow
    assert services.save_version(workflow, definition(name="Two"), ada, base_version=1).number == 2
    with pytest.raises(services.VersionConflict) as conflict:
        services.save_version(workflow, definition(name="Bob's"), bob, base_version=1)
    assert conflict.value.latest_number == 2 and conflict.value.saved_by == "ada"
    assert "saved as version 2 by ada after you loaded version 1" in str(conflict.value)
    # Without base_version the save is unconditional (the CLI, scripted imports).
    assert services.save_version(workflow, definition(name="Three"), bob).number == 3
    workflow.refresh_from_db()
    assert workflow.name == "Three" and workflow.versions.count() == 3


def test_save_refuses_another_slug(ada):
    workflow = services.create_workflow(definition(), ada).workflow
    with pytest.raises(InvalidDefinition) as error:
        services.save_version(workflow, definition(slug="renamed"), ada)
    assert error.value.problems[0].path == "slug" and "expected 'greet'" in error.value.problems[0].message


def test_start_requires_a_published_version(ada):
    workflow = services.create_workflow(definition(), ada).workflow
    with pytest.raises(services.NotPublished, match="Workflow 'greet' has no published version: publish it first"):
        services.start_run(workflow, {}, ada)
    assert Run.objects.count() == 0


@pytest.mark.kafka
def test_publish_goes_to_kafka_then_live_and_start_creates_a_pending_run(kafka, ada):
    workflow = services.create_workflow(definition(), ada).workflow
    services.save_version(workflow, definition(name="Two"), ada)
    published = services.publish(workflow, None, ada)
    assert published.number == 2 and published.published_by == ada and published.published_at
    assert workflow.live_version == published and services.version_status(published) == services.LIVE
    live, _ = read_records(kafka.definitions, codec.decode_definition, lambda v, _m: isinstance(v, LiveVersion))
    assert (live.slug, live.version) == ("greet", 2)

    run_id = services.start_run(workflow, {"n": 1}, ada)
    run = Run.objects.get(id=run_id)
    assert (run.status, run.version, run.input, run.started_by, run.trigger) == (
        "pending", 2, {"n": 1}, "ada", {"type": "manual"})
    command, _ = read_records(kafka.runs, codec.decode_run_command,
                              lambda v, _m: isinstance(v, StartRun) and v.run_id == run_id)
    assert command.version == 2


@pytest.mark.kafka
def test_start_does_not_overwrite_a_row_the_projector_wrote_first(kafka, ada, monkeypatch):
    workflow = services.create_workflow(definition(), ada).workflow
    services.publish(workflow, 1, ada)
    real_start = commands.start_run

    def start_and_project(*args, **kwargs):
        run_id = real_start(*args, **kwargs)
        from django.utils import timezone

        Run.objects.create(id=run_id, workflow="greet", version=1, status="running", created_at=timezone.now(),
                           last_seq=2)
        return run_id

    monkeypatch.setattr(commands, "start_run", start_and_project)
    run_id = services.start_run(workflow, {}, ada)
    run = Run.objects.get(id=run_id)
    assert run.status == "running" and run.last_seq == 2


def test_publish_failure_leaves_the_database_unchanged(ada, settings):
    """Kafka first: if the broker does not acknowledge, the version must not become live."""
    workflow = services.create_workflow(definition(), ada).workflow
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"  # nothing listens there
    settings.KAFKA_CLIENT_CONFIG = {"message.timeout.ms": "1500"}
    commands.reset_producer()
    try:
        with pytest.raises(services.PublishFailed, match="Kafka did not acknowledge"):
            services.publish(workflow, None, ada)
        with pytest.raises(services.NotPublished):
            services.start_run(workflow, {}, ada)
    finally:
        commands.reset_producer()
    workflow.refresh_from_db()
    assert workflow.live_version is None and workflow.latest_version.published_at is None


def test_publish_unknown_version(ada):
    workflow = services.create_workflow(definition(), ada).workflow
    with pytest.raises(services.VersionNotFound, match="has no version 5"):
        services.publish(workflow, 5, ada)


def test_restore_saves_the_old_definition_as_a_new_draft(ada):
    workflow = services.create_workflow(definition(), ada).workflow
    services.save_version(workflow, definition(name="Changed"), ada)
    restored = services.restore_version(workflow, 1, ada)
    assert restored.number == 3 and restored.definition["name"] == "Greet"
    assert restored.message == "Restored version 1"
    assert workflow.versions.get(number=2).definition["name"] == "Changed"


def test_duplicate_takes_the_latest_definition_under_a_new_slug(ada):
    workflow = services.create_workflow(definition(), ada).workflow
    services.save_version(workflow, definition(name="Latest"), ada)
    copy = services.duplicate_workflow(workflow, "greet-copy", ada)
    assert (copy.workflow.slug, copy.number, copy.definition["slug"]) == ("greet-copy", 1, "greet-copy")
    assert copy.workflow.name == "Latest (copy)" and len(copy.definition["steps"]) == 3
    with pytest.raises(InvalidDefinition):
        services.duplicate_workflow(workflow, "Bad Slug!", ada)


@pytest.mark.kafka
def test_archive_unpublishes_and_blocks_changes(kafka, ada):
    workflow = services.create_workflow(definition(), ada).workflow
    services.publish(workflow, None, ada)
    services.archive_workflow(workflow, ada)
    assert workflow.archived and workflow.live_version is None
    unpublished, _ = read_records(kafka.definitions, codec.decode_definition,
                                  lambda v, _m: isinstance(v, LiveVersion) and v.version is None)
    assert unpublished.slug == "greet"
    for action in (lambda: services.save_version(workflow, definition(), ada),
                   lambda: services.publish(workflow, None, ada),
                   lambda: services.start_run(workflow, {}, ada)):
        with pytest.raises(services.WorkflowArchived, match="archived"):
            action()
    services.unarchive_workflow(workflow, ada)
    assert services.save_version(workflow, definition(), ada).number == 2


@pytest.mark.kafka
def test_test_run_offers_the_draft_without_making_it_live(kafka, ada):
    workflow = services.create_workflow(definition(), ada).workflow
    run_id = services.start_test_run(workflow, 1, {"n": 5}, ada, record={"topic": "orders", "offset": 7})
    offered, msg = read_records(kafka.definitions, codec.decode_definition,
                                lambda v, _m: isinstance(v, PublishedDefinition))
    assert msg.key() == b"greet@1" and offered.definition["slug"] == "greet"
    command, _ = read_records(kafka.runs, codec.decode_run_command, lambda v, _m: isinstance(v, StartRun))
    assert (command.run_id, command.version, command.input) == (run_id, 1, {"n": 5})
    assert command.trigger["type"] == "test" and command.trigger["offset"] == 7
    workflow.refresh_from_db()
    assert workflow.live_version is None and Run.objects.get(id=run_id).trigger["topic"] == "orders"
    # Only the version record went out: no "live" record that would switch triggers over.
    with pytest.raises(AssertionError, match="no matching record"):
        read_records(kafka.definitions, codec.decode_definition, lambda v, _m: isinstance(v, LiveVersion), timeout=3)
