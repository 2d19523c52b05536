"""Typer commands for `recstream eval` (and, re-exported, `recstream bench pipeline`).

Kept light at import time (only typer and rich): the work is imported when a command runs.
Registered in main.py / bench_cmd.py with::

    app.command("eval")(eval_command)
    bench_app.command("pipeline")(bench_pipeline_command)

`bench_pipeline_command` is defined in bench_cmd.py (as `bench_pipeline`, registered there);
the name stays here for main.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from recstream.bench_cmd import bench_pipeline as bench_pipeline_command
from recstream.cli_errors import err, settings_or_exit

if TYPE_CHECKING:
    pass


def eval_command(
    dataset: Annotated[
        str, typer.Option(help="'synthetic', or a MovieLens folder (ml-latest-small, ml-100k).")
    ],
    out: Annotated[Path, typer.Option(help="Folder for metrics.json, report.md and plots.")],
    limit: Annotated[
        int | None, typer.Option(help="Replay only the first N events (time order).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic generator.")] = 0,
    rate: Annotated[
        float | None, typer.Option(help="Events per second to send (default: unpaced).")
    ] = None,
    max_in_flight: Annotated[
        int | None,
        typer.Option(
            help="Events sent but not yet reflected by a list, at most (default 500 per "
            "worker; 0: no limit, a backlog forms)."
        ),
    ] = None,
    fixed_weights: Annotated[
        bool,
        typer.Option(
            help="Also replay through a pipeline with frozen fusion weights (η = 0), scored "
            "as 'fixed_weights'; doubles the replay time."
        ),
    ] = True,
    engine: Annotated[
        str,
        typer.Option(
            help="kafka: through the real broker and worker processes (the truth). inprocess: "
            "the workers' engine in this process, same events and micro-batches, no broker."
        ),
    ] = "kafka",
    ablations: Annotated[
        bool,
        typer.Option(
            "--ablations",
            help="Also replay with exploration off and with MMR off, scored as "
            "'no_exploration' and 'no_mmr' (in-process engine only; two more replays).",
        ),
    ] = False,
    concurrent_replays: Annotated[
        bool,
        typer.Option(
            "--concurrent-replays/--serial-replays",
            help="Through Kafka, run the fixed-weights replay at the same time as the replay "
            "under test (own topics and worker; about 1.5x faster on 2 cores, latency figures "
            "then those of a shared machine) or after it.",
        ),
    ] = True,
) -> None:
    """Replay a data set through the pipeline (real broker, real workers) or the same engine
    in-process, and score it prequentially against in-process baselines."""
    from recstream.agents.embedding import encoder_from_settings
    from recstream.evaluation.oracle import ORACLE
    from recstream.evaluation.run import run_eval
    from recstream.evaluation.scoring import SYSTEM_UNDER_TEST
    from recstream.models.errors import RecstreamError

    if ablations and engine != "inprocess":
        raise typer.BadParameter(
            "needs --engine inprocess (the ablations are two more replays of the in-process "
            "engine; through Kafka they would cost an hour each)",
            param_hint="--ablations",
        )
    settings = settings_or_exit()
    try:
        metrics = run_eval(
            settings,
            dataset,
            out,
            limit,
            workers,
            seed,
            err,
            rate=rate,
            max_in_flight=max_in_flight,
            fixed_weights=fixed_weights,
            encoder_factory=encoder_from_settings,
            engine=engine,
            ablations=ablations,
            concurrent_replays=concurrent_replays,
        )
    except RecstreamError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    rows = [
        f"{name:<17} HR@10 {s['hr@10'] or 0:.4f}  NDCG@10 {s['ndcg@10'] or 0:.4f}  "
        f"Recall@20 {s['recall@20'] or 0:.4f}  MRR {s['mrr'] or 0:.4f}  "
        f"coverage {s['coverage'] or 0:.3f}"
        for name, s in metrics["systems"].items()
    ]
    lat = metrics["latency_ms"]
    typer.echo("\n".join(rows))
    if best := metrics.get("best_peer"):
        hr, ndcg = best["hr@10"], best["ndcg@10"]
        ceiling = f" ({ORACLE}: the ground-truth ceiling, not a peer)"
        typer.echo(
            f"{SYSTEM_UNDER_TEST} against the best baseline: HR@10 {hr['ratio'] or 0:.3f}x of "
            f"{hr['peer']}, NDCG@10 {ndcg['ratio'] or 0:.3f}x of {ndcg['peer']}; behind it in "
            f"slices {best['slices_behind'] or 'none'} after the first"
            + (ceiling if ORACLE in metrics["systems"] else "")
        )
    typer.echo(
        f"{SYSTEM_UNDER_TEST} ranker {metrics['systems'][SYSTEM_UNDER_TEST]['ranker']}; "
        f"latency p50/p95/p99 {lat['p50']}/{lat['p95']}/{lat['p99']} ms; "
        f"throughput {metrics['throughput_eps']:.1f} events/s ({metrics['run']['engine']})"
    )
    typer.echo(f"wrote {out / 'metrics.json'} and {out / 'report.md'}")


# Stand-alone use before the commands are registered: python -m recstream.eval_cmd eval ...
cli = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)
cli.command("eval")(eval_command)
cli.command("bench-pipeline")(bench_pipeline_command)

if __name__ == "__main__":
    cli()
