"""`sluice trigger pause|resume|status` against a live Sluice (daphne, the test database, the
embedded broker), run as the installed console script."""

from __future__ import annotations

import pytest

from designer.models import Workflow
from tests.cli_support import cli_env, sluice, sluice_json
from tests.test_cli_live import make_user, one_error_line
from tests.trigger_support import make_live

pytestmark = [pytest.mark.kafka]


def test_pause_status_resume_and_refusals(kafka, live_server, tmp_path):
    make_live("orders-in", {"type": "kafka", "topic": "orders-cli", "max_runs_per_second": 25})
    env = cli_env(tmp_path / "config", live_server.url, make_user("ops", superuser=True))

    paused = sluice(env, "trigger", "pause", "orders-in")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith("the kafka trigger of orders-in is paused by ops at ")
    assert Workflow.objects.get(slug="orders-in").trigger_paused

    status = sluice(env, "trigger", "status", "orders-in")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith("orders-in: kafka trigger on orders-cli, paused by ops at ")
    assert lines[1].startswith("lag: ") and "rate limit: 25 runs per second" in lines
    state = sluice_json(env, "trigger", "status", "orders-in")
    assert (state["paused"], state["topic"], state["max_runs_per_second"]) == (True, "orders-cli", 25)

    resumed = sluice_json(env, "trigger", "resume", "orders-in")
    assert (resumed["workflow"], resumed["paused"], resumed["paused_by"]) == ("orders-in", False, "ops")
    assert not Workflow.objects.get(slug="orders-in").trigger_paused

    missing = sluice(env, "trigger", "pause", "no-such-flow")
    assert missing.returncode == 1 and one_error_line(missing) == "error: No workflow 'no-such-flow'"
    viewer = cli_env(tmp_path / "viewer", live_server.url, make_user("viewer", "designer.view_workflow"))
    refused = sluice(viewer, "trigger", "pause", "orders-in")
    assert refused.returncode == 1
    assert one_error_line(refused) == "error: You may not pause or resume the trigger of 'orders-in'"
    assert not Workflow.objects.get(slug="orders-in").trigger_paused
    usage = sluice(env, "trigger", "stop", "orders-in")
    assert usage.returncode == 2
