"""`recstream bench ...`: benchmarks that print (and optionally save) one JSON object each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

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
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Also write the JSON here.")
    ] = None,
) -> None:
    """Embedding stage end to end (items topic → stored vectors) vs a plain encode call."""
    from recstream.bench_stage import run_stage_bench
    from recstream.config.settings import Settings

    emit(run_stage_bench(Settings(), n, batch_size, device), json_file)


@bench_app.command("encode")
def bench_encode(
    n: Annotated[int, typer.Option("--n", help="Texts to embed.")] = 2000,
    batch_size: Annotated[int, typer.Option(help="Encode batch size.")] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
    repeats: Annotated[int, typer.Option(help="Passes; the fastest is reported.")] = 1,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Also write the JSON here.")
    ] = None,
) -> None:
    """The encoder alone (no Kafka): plain library call vs recstream's TextEncoder."""
    from recstream.bench_embed import run_encode_bench

    emit(run_encode_bench(n, batch_size, device, repeats=repeats), json_file)


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
