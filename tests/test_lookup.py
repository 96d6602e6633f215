"""The `lookup` step and its tables against the real embedded broker: values, missing keys,
updates and tombstones followed live, restore before the first answer (also past transaction
markers and after a runner is killed), topics that appear later, Sluice's own topics refused,
and the memory bound."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from django.conf import settings

from orchestrator import spec, steps
from orchestrator.messages import StepTask
from orchestrator.runtime import commands, tables
from orchestrator.runtime.worker_loop import execute_task
from orchestrator.steps.base import StepConfigError, TaskContext
from tests.runtime_support import create_topic, publish, read_topic, runner_process, user_topic
from tests.test_runtime_safety import running



def put(topic: str, *pairs) -> None:
    """Produce (key, value) records; values that are not bytes (or None) are sent as JSON."""
    producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS, "partitioner": "murmur2_random"})
    for key, value in pairs:
        if value is not None and not isinstance(value, bytes):
            value = json.dumps(value).encode()
        producer.produce(topic, key=key.encode() if isinstance(key, str) else key, value=value)
    assert producer.flush(30) == 0


def eventually(check, timeout: float = 15.0, what: str = "condition"):
    """Poll `check()` until it returns something truthy (the timeout is a safety net only)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def task_context() -> TaskContext:
    return TaskContext(run_id="run-1", workflow="shop", version=1, step_id="customer", attempt=1,
                       idempotency_key="run-1/customer/1")


@pytest.fixture
def store(kafka):
    instance = tables.TableStore()
    yield instance
    instance.close()


def enrich(topic: str, slug: str = "enrich") -> dict:
    return {
        "slug": slug, "name": "Enrich an order", "trigger": {"type": "manual"},
        "steps": [
            {"id": "customer", "type": "lookup", "config": {"topic": topic, "key": "{{ trigger.customer_id }}"}},
            {"id": "order", "type": "transform",
             "config": {"output": {"found": "{{ steps.customer.output.found }}",
                                   "name": "{{ steps.customer.output.value.name if steps.customer.output.found else '' }}"}}},
        ],
        "edges": [{"from": "customer", "to": "order"}],
    }


def run_output(history, run_id: str, timeout: float = 60.0):
    history.wait_finished([run_id], timeout=timeout)
    (end,) = [e for e in history.by_run[run_id] if e.kind in ("run_succeeded", "run_failed")]
    assert end.kind == "run_succeeded", end.data
    return end.data["output"]


# ---- validation (no broker) -----------------------------------------------------------------
def lookup_definition(config: dict) -> dict:
    return {"slug": "shop", "name": "Shop", "trigger": {"type": "manual"}, "edges": [],
            "steps": [{"id": "customer", "type": "lookup", "config": config}]}


def test_a_lookup_of_sluices_own_topic_is_refused_by_validation_with_the_field_path(settings):
    settings.SLUICE_TOPIC_PREFIX = "wf."
    problems = spec.validate(lookup_definition({"topic": "wf.state", "key": "{{ trigger.id }}"}))
    assert [(p.path, p.step_id, p.code) for p in problems] == [("steps[0].config.topic", "customer", "invalid-config")]
    assert "reserved for Sluice" in problems[0].message
    settings.SLUICE_TOPIC_PREFIX = "acme.sluice."
    assert spec.validate(lookup_definition({"topic": "wf.state", "key": "{{ trigger.id }}"})) == []
    assert spec.validate(lookup_definition({"topic": "acme.sluice.runs", "key": "x"}))[0].path == "steps[0].config.topic"


def test_a_lookup_needs_a_topic_name_and_a_key():
    problems = spec.validate(lookup_definition({"topic": "my customers"}))
    assert {(p.path, p.code) for p in problems} == {("steps[0].config.topic", "schema"),
                                                     ("steps[0].config.key", "required")}


def test_a_key_that_renders_to_nothing_fails_the_step_naming_the_field():
    with pytest.raises(StepConfigError, match=r"^config\.key: rendered to nothing"):
        steps.get("lookup").execute({"topic": "customers", "key": None}, task_context())


# ---- tables, straight from the store ----------------------------------------------------------
@pytest.mark.kafka
def test_a_table_answers_values_and_missing_keys_across_partitions(kafka, store):
    topic = user_topic(kafka, "customers")
    create_topic(topic, partitions=3)
    put(topic, *[(f"c{i}", {"id": f"c{i}", "name": f"Customer {i}"}) for i in range(50)],
        ("text", b"plain words"), ("binary", b"\xff\x00\x01"), (b"\xfe\xff", "non-UTF-8 key"), (None, {"no": "key"}))
    assert store.lookup(topic, "c7") == (True, {"id": "c7", "name": "Customer 7"})
    assert store.lookup(topic, "c49") == (True, {"id": "c49", "name": "Customer 49"})
    assert store.lookup(topic, "nobody") == (False, None)
    assert store.lookup(topic, "text") == (True, "plain words")
    assert store.lookup(topic, "binary") == (True, {"base64": "/wAB"})
    assert store.lookup(topic, "feff") == (True, "non-UTF-8 key")
    assert store.stats()[topic]["keys"] == 53 and store.stats()[topic]["records_without_key"] == 1


@pytest.mark.kafka
def test_an_update_is_seen_within_a_second_and_a_tombstone_deletes_the_key(kafka, store):
    topic = user_topic(kafka, "customers")
    create_topic(topic, partitions=2)
    put(topic, ("c1", {"tier": "silver"}), ("c2", {"tier": "gold"}))
    assert store.lookup(topic, "c1") == (True, {"tier": "silver"})
    time.sleep(1.5)  # let the table go quiet (paused, checking watermarks) before the update
    put(topic, ("c1", {"tier": "platinum"}))
    produced = time.monotonic()
    eventually(lambda: store.lookup(topic, "c1") == (True, {"tier": "platinum"}), what="the update")
    seen_after = time.monotonic() - produced
    put(topic, ("c2", None))
    eventually(lambda: store.lookup(topic, "c2") == (False, None), what="the tombstone")
    assert store.lookup(topic, "c1") == (True, {"tier": "platinum"})
    print(f"update seen after {seen_after * 1000:.0f} ms")


@pytest.mark.kafka
def test_the_first_lookup_answers_only_once_the_whole_topic_is_read(kafka, store):
    """Restored to the end offsets, past transaction markers and aborted records."""
    topic = user_topic(kafka, "customers")
    create_topic(topic, partitions=2)
    put(topic, *[(f"c{i}", {"n": i}) for i in range(3000)])
    producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS, "partitioner": "murmur2_random",
                         "transactional.id": f"test-{uuid.uuid4().hex}"})
    producer.init_transactions()
    producer.begin_transaction()
    producer.produce(topic, key=b"c1", value=b'{"n": "committed"}')
    producer.commit_transaction()
    producer.begin_transaction()
    producer.produce(topic, key=b"c2", value=b'{"n": "aborted"}')
    producer.produce(topic, key=b"ghost", value=b'{"n": "aborted"}')
    producer.abort_transaction()
    # No polling: the first answer already reflects every committed record.
    assert store.lookup(topic, "c2999") == (True, {"n": 2999})
    assert store.lookup(topic, "c1") == (True, {"n": "committed"})
    assert store.lookup(topic, "c2") == (True, {"n": 2})
    assert store.lookup(topic, "ghost") == (False, None)


@pytest.mark.kafka
def test_a_topic_that_does_not_exist_yet_answers_not_found_then_follows_it(kafka, store):
    topic = user_topic(kafka, "later")
    assert store.lookup(topic, "c1") == (False, None)
    assert topic not in AdminClient({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS}).list_topics(timeout=5).topics
    create_topic(topic, partitions=2)
    put(topic, ("c1", {"name": "Ada"}), ("c2", {"name": "Grace"}))
    eventually(lambda: store.lookup(topic, "c1") == (True, {"name": "Ada"}), what="the new topic's record")
    assert store.lookup(topic, "c2") == (True, {"name": "Grace"})


@pytest.mark.kafka
def test_a_table_over_its_memory_bound_fails_its_lookups_and_spares_the_others(kafka, store, settings):
    settings.SLUICE_LOOKUP_MAX_BYTES = 20_000
    big, small = user_topic(kafka, "big"), user_topic(kafka, "small")
    create_topic(big, partitions=2)
    create_topic(small, partitions=2)
    put(big, *[(f"k{i}", {"blob": "x" * 500}) for i in range(60)])  # about 60 * 640 bytes
    put(small, *[(f"k{i}", {"n": i}) for i in range(20)])  # about 20 * 140 bytes
    with pytest.raises(tables.TableTooLarge, match="SLUICE_LOOKUP_MAX_BYTES") as refused:
        store.lookup(big, "k1")
    assert repr(big) in str(refused.value)
    assert store.stats()[big] == {"keys": 0, "bytes": 0, "restored": True, "failed": True, "records_without_key": 0}
    with pytest.raises(tables.TableTooLarge):
        store.lookup(big, "k59")
    assert store.lookup(small, "k3") == (True, {"n": 3})
    # A dropped table is restored again by a lookup after the retry delay, and serves it if it
    # fits now (after compaction, or, as here, with a higher limit).
    settings.SLUICE_LOOKUP_MAX_BYTES = 100_000
    store.table(big).failed_at -= tables.RETRY_SECONDS + 1
    assert store.lookup(big, "k59") == (True, {"blob": "x" * 500})
    assert 60 * 500 < store.stats()[big]["bytes"] <= 100_000


@pytest.mark.kafka
def test_sluices_own_topics_are_refused_at_run_time(kafka, store):
    with pytest.raises(tables.ReservedTopic, match="reserved for Sluice"):
        store.lookup(kafka.state, "run-1")
    assert store.stats() == {}
    # As a worker runs it, e.g. for a definition published before validation refused it.
    task = StepTask(run_id="run-1", workflow="shop", version=1, step_id="customer", type="lookup", attempt=1,
                    config={"topic": kafka.runs, "key": "run-1"}, idempotency_key="run-1/customer/1",
                    dispatched_at=time.time())
    result = execute_task(task)
    assert not result.ok and f"a lookup may not read topic {kafka.runs!r}" in result.error


# ---- lookup steps in runs ---------------------------------------------------------------------
@pytest.mark.kafka
def test_a_lookup_step_enriches_runs_and_misses_unknown_keys(kafka, history):
    topic = user_topic(kafka, "customers")
    create_topic(topic, partitions=2)
    put(topic, ("c1", {"name": "Ada"}), ("c2", {"name": "Grace"}))
    publish(enrich(topic))
    with running():
        found = commands.start_run("enrich", 1, {"customer_id": "c2"})
        missing = commands.start_run("enrich", 1, {"customer_id": "c9"})
        assert run_output(history, found) == {"found": True, "name": "Grace"}
        assert run_output(history, missing) == {"found": False, "name": ""}
    (started,) = [e for e in history.by_run[found] if e.kind == "step_succeeded" and e.step_id == "customer"]
    assert started.data["output"] == {"found": True, "value": {"name": "Grace"}}


@pytest.mark.kafka
def test_a_table_is_restored_after_the_runner_is_killed(kafka, history):
    topic = user_topic(kafka, "customers")
    create_topic(topic, partitions=2)
    put(topic, ("c1", {"name": "Ada"}))
    publish(enrich(topic))
    instance = f"lookup-{uuid.uuid4().hex[:6]}"
    first = runner_process(instance)
    try:
        assert run_output(history, commands.start_run("enrich", 1, {"customer_id": "c1"})) == {"found": True, "name": "Ada"}
        put(topic, ("c2", {"name": "Grace"}))
        eventually(lambda: run_output(history, commands.start_run("enrich", 1, {"customer_id": "c2"}))["found"],
                   timeout=30, what="the live update in the first runner")
    finally:
        first.kill()
    put(topic, ("c3", {"name": "Edsger"}), ("c1", {"name": "Ada L."}))  # while no runner runs
    second = runner_process(instance)
    try:
        outputs = [run_output(history, commands.start_run("enrich", 1, {"customer_id": c}), timeout=90)
                   for c in ("c1", "c2", "c3")]
    finally:
        second.stop()
    assert outputs == [{"found": True, "name": "Ada L."}, {"found": True, "name": "Grace"},
                       {"found": True, "name": "Edsger"}]


@pytest.mark.kafka
def test_the_order_enrichment_example_enriches_known_customers_and_routes_unknown_ones(kafka, history):
    from designer.management.commands.load_examples import EXAMPLES_DIR

    example = json.loads((EXAMPLES_DIR / "order-enrichment.json").read_text())
    tag = uuid.uuid4().hex[:8]
    # `customers` is the example's own topic name, shared by the session's tests: keys of our own.
    put("customers", (f"{tag}-c1", {"name": "Ada", "tier": "gold"}))
    publish(example)
    with running():
        known = commands.start_run("order-enrichment", 1, {"id": f"{tag}-o1", "customer_id": f"{tag}-c1", "total": 120})
        unknown = commands.start_run("order-enrichment", 1, {"id": f"{tag}-o2", "customer_id": f"{tag}-c9"})
        history.wait_finished([known, unknown], timeout=60)
    outputs = {(e.run_id, e.step_id): e.data["output"] for e in history.events if e.kind == "step_succeeded"}
    assert outputs[(known, "customer")] == {"found": True, "value": {"name": "Ada", "tier": "gold"}}
    assert outputs[(known, "enriched")] == {"topic": "orders.enriched", "key": f"{tag}-o1"}
    assert outputs[(unknown, "customer")] == {"found": False, "value": None}
    assert outputs[(unknown, "unknown")] == {"topic": "orders.unknown-customer", "key": f"{tag}-o2"}
    skipped = {(e.run_id, e.step_id) for e in history.events if e.kind == "step_skipped"}
    assert {(known, "unknown"), (unknown, "enriched")} <= skipped
    (record,) = [m for m in read_topic("orders.enriched") if m.key() == f"{tag}-o1".encode()]
    assert json.loads(record.value()) == {"order": {"id": f"{tag}-o1", "customer_id": f"{tag}-c1", "total": 120},
                                          "customer": {"name": "Ada", "tier": "gold"}, "discount": 0.1}
