"""What a shell user waits for when nothing changed: ``geoaudit audit`` of an audited
step, against the same answer through the stages, side by side.

    .venv/bin/python bench/startup.py [--size-m 300] [--repeats 7]

Every measurement is a new process, timed from outside from its start to its exit.
``up-to-date`` is ``geoaudit audit sample-town --step S`` as a user types it (the run
is found from the sources' files and the database before any stage runs). The
baseline, ``through the stages``, is what the command did before that check: the same
CLI import, then every stage module imported, the validation helper started, and the
stages run on the reused plan (fetch reuses both snapshots, the plan reuses the run).
The two alternate, so machine noise hits both. ``--help``, ``aoi list`` and ``report``
are timed too. Prints the medians and, last, the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AOI = "sample-town"
STEP = "2026-06-01"


def through_stages(step: str) -> None:
    """The baseline, in this process: ``geoaudit audit``'s work before the up-to-date
    check (CLI import, stage modules, validation helper, every stage on a reused plan)."""
    import pipeline.cli.main  # noqa: F401  (the CLI's own import cost)
    import pipeline.run.changes  # noqa: F401
    import pipeline.run.fetch  # noqa: F401
    import pipeline.run.predict  # noqa: F401
    import pipeline.run.publish  # noqa: F401
    import pipeline.run.shard  # noqa: F401
    import pipeline.run.validate  # noqa: F401
    from pipeline.cli.common import context
    from pipeline.locks import audit_lock
    from pipeline.run.handoffs import AuditRequest
    from pipeline.run.local import LocalRunner
    from pipeline.run.validation_helper import AuditGate

    ctx = context()
    with (
        audit_lock(ctx.engine, AOI, step, home=ctx.settings.home) as lock,
        AuditGate(ctx) as gate,
    ):
        done = LocalRunner(ctx.with_validator(gate), gate, lock).run(AuditRequest(AOI, step))
    assert done["publish"].reused, "the baseline must answer from the earlier run"


def prepare(home: Path, size_m: float) -> None:
    """Sample town, a short-trained model, both sample steps audited."""
    from pipeline.context import open_context
    from pipeline.run.local import run_audit
    from pipeline.sample.demo import create_sample_aoi
    from pipeline.settings import Settings
    from pipeline.training.challenger import train_aoi_model

    ctx = open_context(Settings(home=home))
    info, _ = create_sample_aoi(ctx, size_m=size_m)
    train_aoi_model(ctx, AOI, [info.steps[0]], max_steps=10, promote="always")
    for step in info.steps:
        run_audit(ctx, AOI, step)


def wall(command: list[str], env: dict[str, str]) -> float:
    """Seconds from the start of ``command`` to its exit (which must be 0)."""
    t0 = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-m", type=float, default=300.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--home", type=Path, help="An audited home (made when not given).")
    parser.add_argument("--through-stages", metavar="STEP", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.through_stages:
        through_stages(args.through_stages)
        return
    home = args.home or Path(tempfile.mkdtemp(prefix="geoaudit-startup-bench-")) / "home"
    env = {**os.environ, "GEOAUDIT_HOME": str(home)}
    if args.home is None:
        print(f"preparing the sample AOI ({args.size_m:.0f} m) in {home} ...", flush=True)
        os.environ["GEOAUDIT_HOME"] = str(home)
        prepare(home, args.size_m)
    geoaudit = [sys.executable, "-m", "pipeline.cli.main"]
    commands = {
        "up-to-date": [*geoaudit, "audit", AOI, "--step", STEP],
        "through the stages": [sys.executable, __file__, "--through-stages", STEP],
        "--help": [*geoaudit, "--help"],
        "aoi list": [*geoaudit, "aoi", "list"],
        "report": [*geoaudit, "report", AOI],
    }
    for command in commands.values():  # warm the file cache once
        wall(command, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for i in range(args.repeats):
        order = list(commands) if i % 2 == 0 else list(reversed(commands))
        for name in order:
            times[name].append(wall(commands[name], env))
    print(f"\nwall seconds from the shell, median of {args.repeats} (min-max):")
    for name, values in times.items():
        print(
            f"  {name:20s} {statistics.median(values):6.3f} s  "
            f"({min(values):.3f}-{max(values):.3f})"
        )
    fast = statistics.median(times["up-to-date"])
    slow = statistics.median(times["through the stages"])
    print(f"unchanged re-audit: {fast:.3f} s, through the stages {slow:.3f} s: {slow / fast:.1f}x")


if __name__ == "__main__":
    main()
