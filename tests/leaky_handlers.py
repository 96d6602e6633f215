"""Python step handlers that try to leak what they are given, as careless code would: the
secret tests run them on real workers and look for the value everywhere Sluice writes."""

import logging

from orchestrator.handlers import handler

log = logging.getLogger("tests.leaky")


@handler("leaky.log")
def log_input(input, ctx):
    """Log the input, and an exception whose message and traceback carry it."""
    log.warning("handler got %s", input)
    try:
        raise ValueError(f"inner problem with {input}")
    except ValueError:
        log.exception("and failed with it")
    return {"logged": True}


@handler("leaky.raise")
def raise_input(input, ctx):
    """Fail with the input in the message (repr: quotes and backslashes escaped)."""
    raise RuntimeError(f"could not use {input!r}")
