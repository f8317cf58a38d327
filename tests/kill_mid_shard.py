"""Audit a step and SIGKILL this very process in the middle of storing a shard's rows.

    python tests/kill_mid_shard.py HOME URL AOI STEP

The kill comes while the shard's transaction is open (its first tile_score insert),
as a crash or an out-of-memory kill would: nothing of that transaction may survive.
"""

import os
import signal
import sys
from pathlib import Path

from sqlalchemy import event

from pipeline.context import open_context
from pipeline.run.local import run_audit
from pipeline.settings import Settings

if __name__ == "__main__":
    home, url, aoi, step = sys.argv[1:5]
    ctx = open_context(Settings(home=Path(home), database_url=url or None), progress=False)

    @event.listens_for(ctx.engine, "before_cursor_execute")
    def _die(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001, ARG001
        if statement.lstrip().upper().startswith("INSERT INTO TILE_SCORE"):
            print("killing", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    run_audit(ctx, aoi, step)
    print("not killed", flush=True)
