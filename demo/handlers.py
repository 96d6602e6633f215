"""Handlers the example workflows use to show Sluice's behaviour: echo, failure, retries, slowness.

Loaded on runners through SLUICE_HANDLER_MODULES (default "demo.handlers").
"""

import time

from orchestrator.handlers import handler

# demo.sleep never sleeps longer than this, so a typo in an example cannot hang a worker.
MAX_SLEEP_SECONDS = 60.0


def _as_dict(input):
    return input if isinstance(input, dict) else {}


@handler("demo.echo")
def echo(input, ctx):
    """Return the input unchanged."""
    return input


@handler("demo.fail")
def fail(input, ctx):
    """Always fail, with input["message"] if given: shows retries running out."""
    message = _as_dict(input).get("message") or "demo.fail always fails"
    raise RuntimeError(f"{message} (attempt {ctx.attempt})")


@handler("demo.flaky")
def flaky(input, ctx):
    """Fail the first input["fail_times"] attempts (default 2) of each step, then echo the input.

    With a retry policy of max_attempts > fail_times, the step succeeds on a later attempt.
    """
    fail_times = _as_dict(input).get("fail_times", 2)
    if not isinstance(fail_times, int) or isinstance(fail_times, bool) or fail_times < 0:
        raise ValueError(f"input.fail_times must be a whole number >= 0, got {fail_times!r}")
    if ctx.attempt <= fail_times:
        raise RuntimeError(f"flaky failure on attempt {ctx.attempt} of {fail_times} planned")
    return input


@handler("demo.sleep")
def sleep(input, ctx):
    """Sleep input["seconds"] (default 1, at most MAX_SLEEP_SECONDS), then return how long."""
    seconds = _as_dict(input).get("seconds", 1)
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
        raise ValueError(f"input.seconds must be a number >= 0, got {seconds!r}")
    seconds = min(float(seconds), MAX_SLEEP_SECONDS)
    time.sleep(seconds)
    return {"slept_seconds": seconds}
