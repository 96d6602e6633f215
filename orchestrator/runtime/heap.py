"""The garbage collector in long-running Sluice processes (runner, worker processes, bridge).

CPython's cycle collector walks every tracked object on each full (oldest-generation)
collection. After start-up a runner holds a few hundred thousand such objects (Django, the
handlers' modules, the definitions) that live as long as the process: measured in a
20,000-run burst, full collections paused the engine loop for 90 to 340 ms each, six times,
and the runs in flight waited those pauses out. Freezing what start-up built moves it out of
every future collection (gc.freeze, meant for exactly this); what the loops allocate later is
still collected as usual.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)


def freeze_startup_objects() -> None:
    """Collect start-up garbage once, then exempt the survivors from future collections.
    Call when start-up is done and before the loops run."""
    began = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.info("heap: %d start-up objects frozen in %.0f ms", gc.get_freeze_count(),
             (time.perf_counter() - began) * 1000)
