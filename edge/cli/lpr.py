"""``parkedge lpr read|eval``: run the on-box plate reader on images, or measure it on a folder."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from edge.cli import app

lpr = typer.Typer(
    help="On-box plate recognition: read images, evaluate on labelled folders.",
    no_args_is_help=True,
)
app.add_typer(lpr, name="lpr")

GrammarOpt = Annotated[
    str,
    typer.Option(
        "--grammar", "-g", help="Plate grammar: cn, latin, latin:LAYOUTS, sk, cz or eu:sk,cz."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
_err = Console(stderr=True)


def _recogniser(grammar: str):  # type: ignore[no-untyped-def]
    from edge.lpr.grammar import grammar_by_name
    from edge.lpr.ocr import OcrError
    from edge.lpr.pipeline import Recogniser

    try:
        return Recogniser(grammar_by_name(grammar))
    except (ValueError, OcrError) as exc:
        typer.echo(f"lpr: {exc}", err=True)
        raise typer.Exit(2) from None


@lpr.command("read")
def read(
    images: Annotated[list[Path], typer.Argument(help="Image files (full frames).")],
    grammar: GrammarOpt = "cn",
    crop: Annotated[bool, typer.Option("--crop", help="Images are plate crops.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Read the plate in each image: plate, confidence, candidates, time taken."""
    from edge.lpr.pipeline import load_image

    rec = _recogniser(grammar)
    results: list[dict[str, Any]] = []
    failed = False
    for path in images:
        try:
            img = load_image(path)
        except ValueError as exc:
            results.append({"image": str(path), "error": str(exc)})
            failed = True
            continue
        t0 = time.perf_counter()
        cands = [rec.read_crop(img)] if crop else rec.read_frame(img)
        ms = (time.perf_counter() - t0) * 1000
        best = cands[0] if cands and cands[0].plate else None
        results.append(
            {
                "image": str(path),
                "plate": best.plate if best else None,
                "valid": bool(best and best.valid),
                "confidence": round(best.confidence, 4) if best else 0.0,
                "colour": best.colour if best else None,
                "box": list(best.box) if best else None,
                "candidates": [c.plate for c in cands[1:] if c.plate],
                "ms": round(ms, 1),
                "at": datetime.now().astimezone().isoformat(timespec="seconds"),
            }
        )
    if as_json:
        typer.echo(json.dumps(results if len(results) != 1 else results[0], ensure_ascii=False))
    else:
        table = Table("image", "plate", "conf", "candidates", "ms")
        for r in results:
            if "error" in r:
                table.add_row(str(r["image"]), f"[red]{r['error']}[/red]", "", "", "")
            else:
                table.add_row(
                    str(r["image"]),
                    str(r["plate"] or "-"),
                    f"{r['confidence']:.2f}",
                    " ".join(r["candidates"]),
                    f"{r['ms']:.0f}",
                )
        Console().print(table)
    if failed:
        raise typer.Exit(1)


@lpr.command("eval")
def eval_(
    folder: Annotated[Path, typer.Argument(help="Folder of images with labels.csv.")],
    grammar: GrammarOpt = "cn",
    mode: Annotated[str, typer.Option(help="auto, frame or crop.")] = "auto",
    limit: Annotated[int | None, typer.Option(help="Only the first N labels.")] = None,
    errors: Annotated[bool, typer.Option("--errors", help="List misreads on stderr.")] = False,
    folded: Annotated[
        bool, typer.Option("--folded", help="Also report exact with O/0 and I/1 folded.")
    ] = False,
    fixes: Annotated[
        Path | None,
        typer.Option(
            "--corrections",
            help="CSV folder,file,labelled,seen,why of wrong labels; figures are then against "
            "the corrected labels, with exact_as_labelled beside them.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Exact-plate and character accuracy, p50/p95 latency per image, peak RSS."""
    from edge.lpr.evaluate import evaluate_dir, read_corrections

    try:
        corrections = read_corrections(fixes, folder.name) if fixes else None
    except (OSError, ValueError) as exc:
        typer.echo(f"lpr eval: {exc}", err=True)
        raise typer.Exit(2) from None
    rec = _recogniser(grammar)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_err,
        transient=True,
    ) as bar:
        task = bar.add_task(folder.name, total=None)
        try:
            report = evaluate_dir(
                folder,
                rec,
                mode=mode,
                limit=limit,
                progress=lambda i, n: bar.update(task, completed=i, total=n),
                corrections=corrections,
            )
        except ValueError as exc:
            typer.echo(f"lpr eval: {exc}", err=True)
            raise typer.Exit(2) from None
    if errors:
        for file, truth, got in report.errors:
            _err.print(f"{file}: want {truth} got {got or '-'}")
    if as_json:
        typer.echo(json.dumps(report.as_json(folded=folded)))
        return
    j = report.as_json(folded=folded)
    Console().print(
        f"{folder}: n={j['n']} exact={j['exact']:.1%} char_acc={j['char_acc']:.1%} "
        f"p50={j['p50_ms']} ms p95={j['p95_ms']} ms peak RSS={j['rss_mb']} MB"
        + (f" exact(O/0,I/1 folded)={j['exact_folded']:.1%}" if folded else "")
        + (
            f" ({j['labels_corrected']} labels corrected; as labelled "
            f"{j['exact_as_labelled']:.1%})"
            if "labels_corrected" in j
            else ""
        )
    )
