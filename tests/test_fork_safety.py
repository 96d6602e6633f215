"""A forked child (a Celery prefork worker, the tests' live server) never touches its parent's
librdkafka producer: librdkafka is not fork-safe."""

from __future__ import annotations

import os

from orchestrator.runtime import commands


def test_a_forked_child_makes_its_own_command_producer(settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:1"  # never contacted: nothing is produced
    commands.reset_producer()
    parents = commands._get_producer()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer through the pipe, never return into pytest
        try:
            own = commands._get_producer()
            os.write(write, b"own" if own is not parents and parents in commands._inherited else b"shared")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 16)
    os.waitpid(pid, 0)
    os.close(read)
    assert answer == b"own"
    assert commands._get_producer() is parents  # the parent keeps its own
    commands._producer = None  # nothing was produced: no flush wait on an unreachable broker
