"""``[core] hostname_callable`` for the distributed test: each Celery worker process
reports its own name (``GEOAUDIT_TEST_WORKER``), so the test can see which worker ran
which task even though all workers share one machine."""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    """The worker's test name, else the machine's name."""
    return os.environ.get("GEOAUDIT_TEST_WORKER") or socket.getfqdn()
