"""SLUICE_LOG_FORMAT=json: one JSON object per line, with the run and step a line belongs to,
secrets masked before the formatter sees them, and nothing from `extra` but run and step ids."""

from __future__ import annotations

import copy
import io
import json
import logging
import logging.config
import subprocess
import sys

import pytest
from django.conf import settings

import tests.leaky_handlers  # noqa: F401  (registers leaky.*)
from orchestrator import secrets
from orchestrator.messages import StepTask
from orchestrator.observability import logs
from orchestrator.runtime.worker_loop import execute_task
from tests.runtime_support import ROOT

BUFFER = io.StringIO()


@pytest.fixture
def json_lines():
    """Loggers "sluice.test" and "tests.leaky" wired exactly as settings.LOGGING wires the
    console handler, with the json formatter, writing into BUFFER; yields a reader of lines."""
    config = copy.deepcopy(settings.LOGGING)
    config["handlers"]["console"].update(formatter="json", stream="ext://tests.test_json_logs.BUFFER")
    config.pop("root")
    config["loggers"] = {name: {"handlers": ["console"], "level": "DEBUG", "propagate": False}
                         for name in ("sluice.test", "tests.leaky")}
    BUFFER.seek(0)
    BUFFER.truncate()
    secrets.MASKER.forget_all()
    logging.config.dictConfig(config)
    yield lambda: [json.loads(line) for line in BUFFER.getvalue().splitlines()]
    for name in ("sluice.test", "tests.leaky"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    secrets.MASKER.forget_all()


def test_the_mask_comes_before_the_formatter():
    assert settings.LOGGING["handlers"]["console"]["filters"][0] == "mask_secrets"


def test_one_object_per_line_with_run_and_step(json_lines):
    log = logging.getLogger("sluice.test")
    log.info("outside any run")
    tokens = logs.bind(run_id="run-1", step_id="charge")
    try:
        log.warning("inside %s", "a step")
        log.info("named explicitly", extra={"run_id": "run-2"})
    finally:
        logs.unbind(tokens)
    log.info("after")
    first, inside, explicit, after = json_lines()
    assert set(first) == {"time", "level", "logger", "message", "process", "thread"}
    assert (first["level"], first["logger"], first["message"]) == ("INFO", "sluice.test", "outside any run")
    assert first["time"].endswith("+00:00")
    assert (inside["run_id"], inside["step_id"], inside["message"]) == ("run-1", "charge", "inside a step")
    assert (explicit["run_id"], explicit["step_id"]) == ("run-2", "charge")  # extra wins
    assert "run_id" not in after and "step_id" not in after


def test_secrets_are_masked_and_extras_left_out(json_lines):
    secrets.MASKER.add("hunter2-very-secret")
    log = logging.getLogger("sluice.test")
    try:
        raise ValueError("token hunter2-very-secret refused")
    except ValueError:
        log.exception("calling out with hunter2-very-secret", extra={"config": {"key": "hunter2-very-secret"}})
    (line,) = json_lines()
    assert "hunter2-very-secret" not in json.dumps(line)
    assert "ValueError" in line["exception"] and line["level"] == "ERROR"
    assert "config" not in line


def test_a_handlers_log_lines_name_its_run_and_step(json_lines):
    task = StepTask(run_id="run-7", workflow="w", version=1, step_id="enrich", type="python", attempt=1,
                    config={"handler": "leaky.log", "input": {"x": 1}}, idempotency_key="run-7/enrich/1",
                    dispatched_at=0.0)
    assert execute_task(task).ok
    lines = json_lines()
    assert [line["message"] for line in lines] == ["handler got {'x': 1}", "and failed with it"]
    assert all((line["run_id"], line["step_id"]) == ("run-7", "enrich") for line in lines)
    assert logs.RUN_ID.get() is None and logs.STEP_ID.get() is None  # unbound afterwards


def test_an_unknown_log_format_is_refused_with_its_name():
    done = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60,
                          env={"DJANGO_SETTINGS_MODULE": "orchestrator.settings", "SLUICE_LOG_FORMAT": "xml",
                               "SLUICE_DATA_DIR": str(settings.DATA_DIR), "PATH": "/usr/bin:/bin"})
    assert done.returncode != 0
    assert "SLUICE_LOG_FORMAT is 'xml'; it must be 'plain' or 'json'" in done.stderr
