"""Hold the audit lock of an AOI and step in a process of its own, for the tests.

    python tests/lock_holder.py URL AOI STEP HOME [shared]

Prints ``held`` once it holds the lock, releases it one second after a line arrives on
stdin, then prints ``released``. Killing it must free the lock too.
"""

import sys
import time
from pathlib import Path

from pipeline.db.engine import make_engine
from pipeline.locks import audit_lock

if __name__ == "__main__":
    url, aoi, step, home = sys.argv[1:5]
    shared = sys.argv[5:6] == ["shared"]
    with audit_lock(make_engine(url), aoi, step, home=Path(home), shared=shared):
        print("held", flush=True)
        sys.stdin.readline()
        time.sleep(1.0)
    print("released", flush=True)
