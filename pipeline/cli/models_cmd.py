"""``geoaudit models list|promote|export``: the model registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline.cli.common import JsonFlag, console, context, guarded, print_json

app = typer.Typer(help="Model registry: versions, promotion, export.", no_args_is_help=True)


@app.command("list")
@guarded
def list_(
    name: Annotated[str | None, typer.Option(help="Only this model name.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List model versions with their stage and validation IoU."""
    from sqlalchemy.orm import Session

    from pipeline.db import repo

    ctx = context(progress=False)
    with Session(ctx.engine) as s:
        rows = [
            {
                "id": mv.id,
                "name": mv.name,
                "version": mv.version,
                "stage": mv.stage,
                "encoder": mv.encoder,
                "val_iou": (mv.metrics or {}).get("val_iou"),
                "created_at": str(mv.created_at),
            }
            for mv in repo.list_model_versions(s, name)
        ]
    if as_json:
        print_json(rows)
        return
    table = Table("id", "name", "version", "stage", "encoder", "val IoU", "created")
    for r in rows:
        iou = "-" if r["val_iou"] is None else f"{r['val_iou']:.3f}"
        table.add_row(
            str(r["id"]),
            r["name"],
            str(r["version"]),
            r["stage"],
            str(r["encoder"]),
            iou,
            r["created_at"][:19],
        )
    console.print(table)


@app.command("promote")
@guarded
def promote(
    model_version: Annotated[int, typer.Argument(help="Model version id.")],
    as_json: JsonFlag = False,
) -> None:
    """Make a model version the production model of its name (the old one is archived)."""
    from pipeline.db import repo
    from pipeline.db.engine import write_session

    ctx = context(progress=False)
    with write_session(ctx.engine) as s:
        mv = repo.promote(s, model_version)
        promoted = {"id": mv.id, "name": mv.name, "version": mv.version, "stage": mv.stage}
    if as_json:
        print_json(promoted)
        return
    console.print(
        f"model {promoted['name']} v{promoted['version']} (id {promoted['id']}) "
        "is now in production"
    )


@app.command("export")
@guarded
def export(
    model_version: Annotated[int, typer.Argument(help="Model version id.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Target .onnx file.")],
    as_json: JsonFlag = False,
) -> None:
    """Export a model version to ONNX for serving elsewhere (a version trained in folds:
    the mean of its fold models)."""
    from sqlalchemy.orm import Session

    from pipeline.db import repo
    from pipeline.model.export import export_onnx, servable
    from pipeline.model.net import ModelSpec
    from pipeline.run.predict import load_model_version

    ctx = context(progress=False)
    with Session(ctx.engine) as s:
        mv = repo.get_model_version(s, model_version)
        spec_params = (mv.params or {}).get("spec", {})
    spec = ModelSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec_params.items()})
    model = servable(load_model_version(ctx, model_version).models)
    path = export_onnx(model, spec, out)
    if as_json:
        print_json({"model_version_id": model_version, "onnx": str(path)})
        return
    console.print(f"ONNX model written to {path}")
