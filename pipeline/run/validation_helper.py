"""The local runner's validation gate in a forked helper process (Linux).

Great Expectations takes seconds to import, mostly pure Python that a thread cannot
overlap with anything. Forked at the start of an audit, the helper shares every module
the audit already loaded and imports GX on the other core while the audit reads its
sources. It then runs the input suites of the planned run and, later, the output suites
before publishing; each answer comes as soon as the results are stored, and the Data Docs
pages are written after it, while the audit goes on. Where ``fork`` is not available the
gate runs in-process; the results are the same.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import sys
from multiprocessing.connection import Connection
from typing import Any

import pandas as pd
from sqlalchemy.engine import Engine

from pipeline.aoi.config import AoiConfig
from pipeline.context import Context, open_context
from pipeline.run.validate import validate_inputs, validate_outputs
from pipeline.settings import Settings
from pipeline.validate.report import ValidationReport

log = logging.getLogger(__name__)

# the parent's pool, kept referenced in the child: a connection finalized here would say
# goodbye to the server on the socket the parent still uses (the child leaves with
# os._exit, which finalizes nothing). The child's own queries reach the same engine
# (open_context caches it per URL), which after dispose() opens fresh connections.
_INHERITED: list[Any] = []


def _child(conn: Connection, parent_end: Connection, settings: Settings, engine: Engine) -> None:
    """Leave the parent's database connections to the parent, load GX and the suites,
    then answer requests until told to stop (None) or the parent is gone."""
    parent_end.close()  # so that the parent's death reads as EOF here
    _INHERITED.append(engine.pool)
    engine.dispose(close=False)  # SQLAlchemy's recipe for an engine inherited by fork
    from pipeline.validate.gx import suite_names, validation_definition

    for name in suite_names():
        validation_definition(name)
    ctx: Context | None = None
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        kind, args = request
        try:
            ctx = ctx or open_context(settings)
            if kind == "inputs":
                report = validate_inputs(ctx, *args, pages=False)
            else:
                report = validate_outputs(ctx, *args, pages=False)
        except Exception as exc:  # noqa: BLE001 - handed to the parent, which raises it
            try:
                conn.send(("error", exc))
            except Exception:  # noqa: BLE001 - an error that does not pickle: its words
                conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
            continue
        conn.send(("ok", report))
        try:
            report.write_pages(ctx.store)  # after the answer: off the audit's path
        except Exception:  # noqa: BLE001 - the results are stored; pages are a view
            log.exception("Data Docs pages not written", extra={"index": report.index_key})


class AuditGate:
    """The input and output suites of one audit (a :class:`~pipeline.context.Validator`);
    a context manager around the audit.

    :meth:`submit_inputs` starts the input suites of a run and returns at once; the
    runner works on while :meth:`inputs_ready` is False, and :meth:`validate_inputs`
    then answers (waiting if need be).
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._process: Any = None
        self._used = False
        self._pending: int | None = None
        if sys.platform == "linux":
            mp = multiprocessing.get_context("fork")
            self._conn, child_conn = mp.Pipe()
            self._process = mp.Process(
                target=_child,
                args=(child_conn, self._conn, ctx.settings, ctx.engine),
                name="geoaudit-gate",
                daemon=True,
            )
            self._process.start()
            child_conn.close()

    def validate_inputs(self, run_id: int) -> ValidationReport:
        """The input suites on run ``run_id``'s snapshots (stored on the run): the answer
        to :meth:`submit_inputs` when that run was submitted, else submitted now."""
        if self._pending != run_id:
            if self._pending is not None and self._process is not None:
                self._receive()  # another run's answer, never asked for: not this one's
            self.submit_inputs(run_id)
        self._pending = None
        if self._process is None:
            return validate_inputs(self._ctx, run_id)
        return self._receive()

    def submit_inputs(self, run_id: int) -> None:
        """Start validating run ``run_id``'s inputs; :meth:`validate_inputs` answers."""
        self._pending = run_id
        if self._process is not None:
            self._send("inputs", (run_id,))

    def inputs_ready(self) -> bool:
        """True once :meth:`validate_inputs` would answer without waiting."""
        return self._process is None or self._conn.poll()

    def validate_outputs(
        self,
        run_id: int,
        config: AoiConfig,
        step: str,
        tiles: pd.DataFrame,
        findings: pd.DataFrame,
        shard_ids: list[str],
    ) -> ValidationReport:
        """The output suites on a run's tile scores and findings (see
        :func:`~pipeline.validate.gate.validate_outputs`)."""
        if self._process is None:
            return validate_outputs(self._ctx, run_id, config, step, tiles, findings, shard_ids)
        scores = ["z", "x", "y", "iou", "precision", "recall", "f1", "qod"]
        args = (
            run_id,
            config,
            step,
            pd.DataFrame(tiles[scores]),
            pd.DataFrame({"geometry": findings.geometry.to_numpy()}),
            shard_ids,
        )
        return self._ask("outputs", args)

    def _ask(self, kind: str, args: tuple[Any, ...]) -> ValidationReport:
        self._send(kind, args)
        return self._receive()

    def _send(self, kind: str, args: tuple[Any, ...]) -> None:
        self._used = True
        try:
            self._conn.send((kind, args))
        except OSError as exc:
            self._stopped(exc)

    def _receive(self) -> ValidationReport:
        try:
            status, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            self._stopped(exc)
        if status == "error":
            raise value
        return value

    def _stopped(self, exc: BaseException) -> None:
        self._process.join(timeout=5)
        code = self._process.exitcode
        self._process = None
        self._conn.close()
        raise RuntimeError(f"the validation helper process stopped (exit code {code})") from exc

    def close(self) -> None:
        """Let the helper finish its pages and exit; stop it at once if it was never
        asked anything (it may still be loading GX). Idempotent."""
        if self._process is None:
            return
        if self._used:
            with contextlib.suppress(OSError):
                self._conn.send(None)
            self._process.join(timeout=60)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()
        self._conn.close()
        self._process = None

    def __enter__(self) -> AuditGate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
