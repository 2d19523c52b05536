"""`recstream bench ...`: benchmarks that print (and optionally save) one JSON object each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from recstream.cli_errors import clean_errors, err, settings_or_exit

bench_app = typer.Typer(help="Benchmarks (speed and memory), JSON output.", no_args_is_help=True)
console = Console()


def emit(result: dict[str, Any], json_file: Path | None) -> None:
    text = json.dumps(result, indent=2)
    console.print_json(text)
    if json_file is not None:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        json_file.write_text(text + "\n")


@bench_app.command("embed")
def bench_embed(
    n: Annotated[int, typer.Option("--n", help="Texts (items) to embed.")] = 2000,
    batch_size: Annotated[int, typer.Option(help="Micro-batch / encode batch size.")] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
    backend: Annotated[
        str | None,
        typer.Option(help="torch, onnx or onnx-int8 (default: RECSTREAM_EMBED_BACKEND)."),
    ] = None,
    stage: Annotated[
        bool,
        typer.Option(
            help="Run the Kafka stage (a worker, the broker); --no-stage times the encoder "
            "alone (a GPU machine without Kafka)."
        ),
    ] = True,
    repeats: Annotated[int, typer.Option(help="--no-stage: passes; the fastest counts.")] = 3,
    categories: Annotated[
        bool,
        typer.Option(
            help="The stage's items carry their two categories; --no-categories sends them "
            "without, so the worker also clusters them (k-means refits)."
        ),
    ] = True,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Also write the JSON here.")
    ] = None,
) -> None:
    """Embedding stage end to end (items topic → stored vectors) vs the backend's plain call;
    with --no-stage the encoder alone (items/s, batch latency)."""
    settings = settings_or_exit()
    chosen = backend or settings.embed_backend
    with clean_errors():
        if not stage:
            from recstream.bench_embed import run_encode_bench

            export_dir = settings.embed_export_dir or settings.home / "onnx"
            result = run_encode_bench(
                n, batch_size, device, backend=chosen, export_dir=export_dir, repeats=repeats
            )
        else:
            from recstream.bench_stage import run_stage_bench

            result = run_stage_bench(
                settings, n, batch_size, device, backend=chosen, categories=categories
            )
    emit(result, json_file)


@bench_app.command("encode")
def bench_encode(
    n: Annotated[int, typer.Option("--n", help="Texts to embed.")] = 2000,
    batch_size: Annotated[int, typer.Option(help="Encode batch size.")] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
    backend: Annotated[str, typer.Option(help="torch, onnx or onnx-int8.")] = "torch",
    repeats: Annotated[int, typer.Option(help="Passes; the fastest is reported.")] = 1,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Also write the JSON here.")
    ] = None,
) -> None:
    """The encoder alone (no Kafka): the backend's plain call vs recstream's TextEncoder."""
    from recstream.bench_embed import run_encode_bench

    settings = settings_or_exit()
    export_dir = settings.embed_export_dir or settings.home / "onnx"
    with clean_errors():
        result = run_encode_bench(
            n, batch_size, device, backend=backend, export_dir=export_dir, repeats=repeats
        )
    emit(result, json_file)


@bench_app.command("embed-quality")
def bench_embed_quality(
    dataset: Annotated[
        Path, typer.Option(help="MovieLens folder with movies.csv (the items embedded).")
    ] = Path("../shared/data/ml-latest-small"),
    backends: Annotated[str, typer.Option(help="Comma-separated backends to compare.")] = (
        "onnx,onnx-int8"
    ),
    limit: Annotated[int, typer.Option(help="First N movies only (0: all).")] = 0,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Also write the JSON here.")
    ] = None,
) -> None:
    """Each backend's vectors against torch fp32: cosine and top-10 neighbour overlap (CPU)."""
    from recstream.bench_embed import movielens_item_texts, run_quality_bench

    settings = settings_or_exit()
    export_dir = settings.embed_export_dir or settings.home / "onnx"
    chosen = [b.strip() for b in backends.split(",") if b.strip()]
    with clean_errors():
        texts = movielens_item_texts(dataset)
        result = run_quality_bench(texts[:limit] if limit else texts, chosen, export_dir)
    emit(result, json_file)


@bench_app.command("state")
def bench_state(
    users: Annotated[int, typer.Option(help="Users.")] = 2000,
    events_per_user: Annotated[int, typer.Option(help="Events per user.")] = 50,
    dim: Annotated[int, typer.Option(help="Vector dimension.")] = 384,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Also write the JSON here.")
    ] = None,
) -> None:
    """Per-event interest-state update time (µs, embedding excluded) and bytes per user."""
    from recstream.bench_state import run_state_bench

    emit(
        run_state_bench(n_users=users, events_per_user=events_per_user, dim=dim, seed=seed),
        json_file,
    )


@bench_app.command("pipeline")
def bench_pipeline(
    events: Annotated[int, typer.Option(min=1, help="Synthetic events to send.")] = 5000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    rate: Annotated[
        float,
        typer.Option(
            min=0,
            help="Offered rate (events/s) of the paced second run, open loop; 0 skips it.",
        ),
    ] = 1000.0,
    max_in_flight: Annotated[
        int | None,
        typer.Option(
            help="Unpaced run: events sent but not yet reflected by a list, at most "
            "(default 1000 per worker; 0: no limit, a backlog forms)."
        ),
    ] = None,
    passthrough: Annotated[
        bool,
        typer.Option(
            help="Also measure the plain consumer → producer loop on the same broker "
            "(the ceiling) and report the ratio."
        ),
    ] = True,
    state_only: Annotated[
        bool,
        typer.Option(
            help="Also run the same events through workers with lists off "
            "(RECSTREAM_PUBLISH_LISTS=false), timed until the workers committed every event."
        ),
    ] = True,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="RECSTREAM_NAME=VALUE (or name=value) for the workers' settings; repeatable, "
            "e.g. --set RECSTREAM_RANKER=popularity.",
        ),
    ] = None,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Also write the JSON here.")
    ] = None,
) -> None:
    """Events/s, latency (unpaced and at --rate), Kafka records per event, state-only events/s
    (lists off) and the passthrough ceiling, through the real broker and W workers; one JSON
    object (keys: see cli/bench_pipeline.py)."""
    from kafka.errors import KafkaError

    from recstream.bench_pipeline import parse_overrides, run_pipeline_bench

    settings = settings_or_exit()
    try:
        with clean_errors():
            result = run_pipeline_bench(
                settings,
                events,
                workers,
                rate or None,
                max_in_flight=max_in_flight,
                overrides=parse_overrides(overrides or ()),
                passthrough=passthrough,
                state_only=state_only,
                console=err,
            )
    except KafkaError as exc:  # no broker there: say where it looked and how to start one
        err.print(
            f"[red]error:[/red] the broker at {settings.bootstrap_servers} did not answer "
            f"({type(exc).__name__}); start one with `recstream kafka start` or set "
            "RECSTREAM_BOOTSTRAP"
        )
        raise typer.Exit(1) from exc
    text = json.dumps(result, indent=2)
    typer.echo(text)
    if json_file is not None:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        json_file.write_text(text + "\n")
