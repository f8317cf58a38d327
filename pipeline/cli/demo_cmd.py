"""``geoaudit demo``: the whole product on a synthetic town, in a few minutes."""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cli.common import JsonFlag, console, context, guarded, print_json


@guarded
def demo(
    size_m: Annotated[
        float, typer.Option(help="Side of the sample town in metres.", min=200)
    ] = 1000.0,
    train_steps: Annotated[
        int | None, typer.Option(help="Training steps per fold model; default 400.", min=1)
    ] = None,
    train_seconds: Annotated[
        float | None, typer.Option(help="Training time cap in seconds; default none.", min=1)
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create the sample AOI, train, audit two time steps, score against the truth."""
    from pipeline.sample.demo import run_demo

    ctx = context()
    budget = {"train_steps": train_steps, "train_seconds": train_seconds}
    result = run_demo(ctx, size_m=size_m, **{k: v for k, v in budget.items() if v is not None})
    s = result.summary
    if as_json:
        print_json({**s, "summary_path": str(result.path)})
        return
    console.rule("GeoAudit demo: sample-town")
    console.print(f"model validation IoU        {s['model']['val_iou']:.3f}")
    for key, label in (
        ("omitted", "omitted buildings"),
        ("phantom", "phantom buildings"),
        ("misaligned", "misaligned buildings"),
        ("changes", "real changes"),
        ("stale", "stale open data"),
    ):
        if key in s:
            console.print(
                f"{label:<28}recall {s[key]['recall']:.2f}  precision {s[key]['precision']:.2f}"
            )
    hs = s["hotspots"]
    console.print(
        f"{'injected hotspots found':<28}{hs['in_top']} of {hs['injected']} (significant cells)"
    )
    cache = s["cache"]
    how = "inputs unchanged, earlier run reused" if cache["rerun_reused_run"] else "re-run"
    console.print(
        f"{'re-audit of the same step':<28}{cache['rerun_seconds']:.2f} s = "
        f"{cache['rerun_ratio']:.1%} of the first ({how}, "
        f"{cache['rerun_predicted_shards']} shards predicted)"
    )
    for stage, fig in s["stages"].items():
        rate = f"{fig['tiles_per_s']:.1f} tiles/s" if fig.get("tiles_per_s") else ""
        console.print(f"  {stage:<12}{fig['seconds']:8.1f} s  {rate}")
    console.print(f"total {s['total_seconds']:.0f} s; summary written to {result.path}")
    later = s["later_imagery"]["step"]
    console.print(
        f"a later flight ({later}) was added to the sample's imagery and not audited: the "
        "next scheduled audit (`airflow dags test audit__sample-town`, or `geoaudit audit "
        "sample-town` without --step) audits it, and the one after records 'no new data'"
    )
    console.print("next: `make dashboard` to review the results, `make airflow` to schedule audits")
