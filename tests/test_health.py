"""/healthz and /readyz of the web, a runner and a bridge, with the broker up and then down."""

from __future__ import annotations

import httpx
import pytest

from orchestrator.observability import health
from orchestrator.runtime.broker import EmbeddedBroker, free_port
from tests.observability_support import unique, wait_for
from tests.runtime_support import ManageProcess, runner_process


@pytest.fixture(autouse=True)
def fresh_broker_answer():
    health.reset_cache()
    yield
    health.reset_cache()


def test_web_is_ready_with_database_and_broker(kafka, client, db):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


def test_web_with_the_broker_down_is_alive_but_not_ready(client, settings, db):
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"  # nothing listens there
    settings.KAFKA_CLIENT_CONFIG = {}
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "not ready", "checks": {"database": "ok", "broker": "unreachable"}}
    assert ready["Cache-Control"].startswith("max-age=0")
    alive = client.get("/healthz")
    assert alive.status_code == 200 and alive.json() == {"status": "alive"}


def test_health_endpoints_need_no_login_and_say_no_more(client, settings, db):
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"
    body = client.get("/readyz").content.decode()
    assert "127.0.0.1" not in body  # the reason (with addresses) goes to the log only


@pytest.mark.kafka
def test_runner_and_bridge_readiness_follow_the_broker(tmp_path, transactional_db, settings, kafka):
    """A broker of the test's own, stopped under a running runner and bridge."""
    broker = EmbeddedBroker(tmp_path / "broker", free_port()).start()
    settings.KAFKA_BOOTSTRAP_SERVERS = broker.bootstrap_servers
    runner_port, bridge_port = free_port(), free_port()
    runner = runner_process(unique("ready"), "--metrics-port", str(runner_port))
    bridge = ManageProcess("bridge", "--metrics-port", str(bridge_port))
    urls = {"runner": f"http://127.0.0.1:{runner_port}", "bridge": f"http://127.0.0.1:{bridge_port}"}

    def readiness(name):
        response = httpx.get(f"{urls[name]}/readyz", timeout=10)
        return response.status_code, response.json()

    try:
        for name in urls:
            code, body = wait_for(lambda n=name: (r := readiness(n))[0] == 200 and r, 90, f"the {name} to be ready")
            assert body["status"] == "ready"
        assert readiness("runner")[1]["checks"] == {"loops": "ok", "broker": "ok"}
        assert readiness("bridge")[1]["checks"] == {"projector": "ok", "database": "ok", "broker": "ok"}
        assert httpx.get(f"{urls['runner']}/nothing", timeout=10).status_code == 404

        broker.stop()
        # The runner first: its loops give up on the broker after a few seconds and the process
        # exits (to be restarted by its supervisor), while the bridge waits for the broker.
        for name in ("runner", "bridge"):
            code, body = wait_for(lambda n=name: (r := readiness(n))[1]["checks"]["broker"] != "ok" and r, 60,
                                  f"the {name} to notice")
            assert code == 503 and body["status"] == "not ready"
            assert body["checks"]["broker"] == "unreachable"
        # The runner may be gone by now (see above); the bridge stays alive, only not ready.
        alive = httpx.get(f"{urls['bridge']}/healthz", timeout=10)
        assert alive.status_code == 200 and alive.json() == {"status": "alive"}
    finally:
        runner.stop()
        bridge.stop()
        broker.stop()
