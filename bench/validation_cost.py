"""What the validation gate adds to an audit of the sample AOI, side by side.

Every measurement is a fresh interpreter (so Great Expectations' import is paid, as in
a scheduled audit) auditing a *new* time step of the sample AOI (its files copied from
the sample's second step): fetch, validate, predict every shard (``repredict``), score,
changes, publish. The baseline runs the same audit with the gate (the helper process,
input and output suites) replaced by no-ops. Variants alternate, so machine noise hits
both:

    .venv/bin/python bench/validation_cost.py [--size-m 1000] [--repeats 3]

Prints the median audit time of each variant, the overhead in percent (target ≤ 15%),
and the gate's own stage times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AOI = "sample-town"
SOURCE_STEP = "2026-06-01"  # the sample's second step, copied to each new step


class NoGate:
    """The baseline's gate: no helper process, no suites."""

    def __init__(self, ctx: object) -> None:
        pass

    def submit_inputs(self, run_id: int) -> None:
        pass

    def inputs_ready(self) -> bool:
        return True

    def validate_inputs(self, run_id: int) -> object:
        from pipeline.validate.report import ValidationReport

        return ValidationReport()

    def validate_outputs(self, *args: object) -> object:
        return self.validate_inputs(0)

    def __enter__(self) -> NoGate:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def worker(home: str, step: str, variant: str) -> None:
    """One audit of a new step in this process; prints its JSON figures."""
    import shutil

    from pipeline.context import open_context
    from pipeline.run import local
    from pipeline.settings import Settings

    if variant == "baseline":
        local.AuditGate = NoGate  # type: ignore[assignment]
    sample = Path(home) / "sample"
    for folder, ext in (("imagery", "tif"), ("opendata", "geojson")):
        shutil.copyfile(sample / folder / f"{SOURCE_STEP}.{ext}", sample / folder / f"{step}.{ext}")
    ctx = open_context(Settings(home=Path(home)))
    t0 = time.perf_counter()
    result = local.run_audit(ctx, AOI, step, repredict=True)
    seconds = time.perf_counter() - t0
    stages = result.summary.stage_seconds
    print(
        json.dumps(
            {
                "variant": variant,
                "seconds": seconds,
                "validate_inputs_s": stages.get("validate", {}).get("seconds", 0.0),
                "publish_s": stages["publish"]["seconds"],
            }
        )
    )


def prepare(home: Path, size_m: float) -> None:
    """Sample town, a short-trained model, both sample steps audited."""
    from pipeline.context import open_context
    from pipeline.run.local import run_audit
    from pipeline.sample.demo import create_sample_aoi
    from pipeline.settings import Settings
    from pipeline.training.challenger import train_aoi_model

    ctx = open_context(Settings(home=home))
    info, config = create_sample_aoi(ctx, size_m=size_m)
    # prediction costs the same whatever the weights: a short training is enough
    train_aoi_model(ctx, AOI, [info.steps[0]], max_steps=10, promote="always")
    assert info.steps[1] == SOURCE_STEP
    for step in info.steps:
        run_audit(ctx, AOI, step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-m", type=float, default=1000.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", nargs=3, metavar=("HOME", "STEP", "VARIANT"))
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    home = Path(tempfile.mkdtemp(prefix="geoaudit-validation-bench-")) / "home"
    print(f"preparing the sample AOI ({args.size_m:.0f} m) in {home} ...", flush=True)
    prepare(home, args.size_m)
    runs: dict[str, list[dict]] = {"baseline": [], "validated": []}
    for i in range(args.repeats):
        for j, variant in enumerate(
            ("baseline", "validated") if i % 2 == 0 else ("validated", "baseline")
        ):
            step = f"{2030 + i}-0{j + 1}-01"
            out = subprocess.run(
                [sys.executable, __file__, "--worker", str(home), step, variant],
                capture_output=True,
                text=True,
                check=True,
            )
            figures = json.loads(out.stdout.strip().splitlines()[-1])
            runs[variant].append(figures)
            print(f"  {variant:9s} run {i + 1}: {figures['seconds']:.2f} s", flush=True)
    base = statistics.median(r["seconds"] for r in runs["baseline"])
    val = statistics.median(r["seconds"] for r in runs["validated"])
    gate = statistics.median(r["validate_inputs_s"] for r in runs["validated"])
    pub_base = statistics.median(r["publish_s"] for r in runs["baseline"])
    pub_val = statistics.median(r["publish_s"] for r in runs["validated"])
    print(f"\naudit of a new step of {AOI} (fetch + repredict), median of {args.repeats}:")
    print(f"  without validation  {base:7.2f} s")
    print(
        f"  with validation     {val:7.2f} s   ({val / base:.3f}x, +{100 * (val / base - 1):.1f}%)"
    )
    print(
        f"  waiting for the gate {gate:5.2f} s   (GX loads in a helper; shards predict meanwhile)"
    )
    print(f"  publish stage       {pub_base:7.2f} s -> {pub_val:.2f} s (output suites inside)")


if __name__ == "__main__":
    main()
