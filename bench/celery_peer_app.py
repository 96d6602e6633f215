"""The peer: the same three steps as a Celery chain, Redis as broker and result backend."""

import os
import time

from celery import Celery

REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("bench_peer", broker=REDIS, backend=REDIS)
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                worker_prefetch_multiplier=64, broker_connection_retry_on_startup=True)


@app.task
def prepare(trigger):
    return {"n": trigger["n"] + 1}


@app.task
def echo(value):
    return value


@app.task
def finish(value):
    return {"n": value["n"] * 2, "done_at": time.time()}
