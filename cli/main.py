"""The `recstream` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from recstream.bench_cmd import bench_app
from recstream.cli_errors import err, fail, settings_or_exit
from recstream.eval_cmd import bench_pipeline_command, eval_command
from recstream.models.errors import RecstreamError

app = typer.Typer(
    help="recstream: real-time, LLM-driven recommendations on Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
kafka_app = typer.Typer(help="Run a local single-node Kafka (KRaft) broker.", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
topics_app = typer.Typer(help="Manage the pipeline's topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
inspect_app = typer.Typer(help="Look at live state through a worker.", no_args_is_help=True)
app.add_typer(inspect_app, name="inspect")
app.add_typer(bench_app, name="bench")
app.command("eval")(eval_command)
bench_app.command("pipeline")(bench_pipeline_command)

console = Console()


# --- kafka -------------------------------------------------------------------------------------
@kafka_app.command("start")
def kafka_start() -> None:
    """Start the local broker (idempotent) and wait until it answers."""
    from recstream.local_kafka import LocalKafka

    settings = settings_or_exit()
    if not settings.uses_local_broker:
        console.print(f"RECSTREAM_BOOTSTRAP is set ({settings.bootstrap}); no local broker needed.")
        return
    try:
        status = LocalKafka(settings).start()
    except RecstreamError as exc:
        raise fail(exc) from exc
    console.print(f"kafka: {status.describe()}")


@kafka_app.command("stop")
def kafka_stop() -> None:
    """Stop the local broker."""
    from recstream.local_kafka import LocalKafka

    stopped = LocalKafka(settings_or_exit()).stop()
    console.print("kafka: stopped" if stopped else "kafka: was not running")


@kafka_app.command("status")
def kafka_status() -> None:
    """Show whether the local broker runs and answers."""
    from recstream.local_kafka import LocalKafka

    status = LocalKafka(settings_or_exit()).status()
    console.print(f"kafka: {status.describe()}")
    if not status.running:
        raise typer.Exit(3)


@kafka_app.command("reset")
def kafka_reset() -> None:
    """Stop the local broker and delete its data (all topics); cached jars stay."""
    from recstream.local_kafka import LocalKafka

    LocalKafka(settings_or_exit()).reset()
    console.print("kafka: stopped and data deleted")


# --- topics ------------------------------------------------------------------------------------
@topics_app.command("create")
def topics_create() -> None:
    """Create the events, items, recommendations and dead-letter topics (settings' partitions)."""
    from recstream.streams.admin import ensure_topics, topic_specs

    settings = settings_or_exit()
    try:
        created = ensure_topics(settings)
    except RecstreamError as exc:
        raise fail(exc) from exc
    except Exception as exc:
        raise fail(
            RecstreamError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}")
        ) from exc
    for name, partitions in topic_specs(settings).items():
        state = "created" if name in created else "exists"
        console.print(f"{name}: {partitions} partitions ({state})")


# --- worker ------------------------------------------------------------------------------------
@app.command()
def worker(
    web_port: Annotated[int | None, typer.Option(help="Web server port (GET /users/..).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="RocksDB directory of this worker.")] = None,
    loglevel: Annotated[str | None, typer.Option(help="debug, info, warning, error.")] = None,
) -> None:
    """Run one pipeline worker (add more to scale; Kafka rebalances partitions)."""
    from recstream.worker import run_worker

    settings = settings_or_exit(web_port=web_port, data_dir=data_dir, log_level=loglevel)
    run_worker(settings)


@app.command()
def trainer(
    every_events: Annotated[int | None, typer.Option(help="Retrain after N new events.")] = None,
    every_s: Annotated[float | None, typer.Option(help="... or after S seconds.")] = None,
    snapshot_dir: Annotated[Path | None, typer.Option(help="Where snapshots go.")] = None,
) -> None:
    """Run the sequence-model trainer: one per cluster; workers pick up its snapshots."""
    from recstream.trainer import run_trainer_process

    settings = settings_or_exit(
        trainer_every_events=every_events, trainer_every_s=every_s, snapshot_dir=snapshot_dir
    )
    try:
        run_trainer_process(settings)
    except RecstreamError as exc:
        raise fail(exc) from exc


# --- produce -----------------------------------------------------------------------------------
@app.command()
def produce(
    kind: Annotated[
        str, typer.Argument(help="events or items (ignored with --synthetic).")
    ] = "events",
    file: Annotated[Path | None, typer.Option("--file", "-f", help="JSONL file to send.")] = None,
    synthetic: Annotated[
        bool, typer.Option(help="Send a generated catalog and event stream.")
    ] = False,
    users: Annotated[int, typer.Option(help="Synthetic users.")] = 50,
    items: Annotated[int, typer.Option(help="Synthetic items.")] = 300,
    events_per_user: Annotated[int, typer.Option(help="Synthetic events per user.")] = 40,
    seed: Annotated[int, typer.Option(help="Seed of the generator.")] = 0,
    rate: Annotated[float | None, typer.Option(help="Max records per second.")] = None,
    send_invalid: Annotated[
        bool, typer.Option(help="Also send lines that fail validation (they reach the DLQ).")
    ] = False,
) -> None:
    """Push a JSONL file or a generated stream to the events/items topics."""
    from rich.progress import Progress

    from recstream.produce import Kind, read_jsonl
    from recstream.produce import produce as do_produce
    from recstream.streams.admin import ensure_topics

    settings = settings_or_exit()
    if kind not in ("events", "items"):
        err.print(f"[red]error:[/red] kind must be events or items, got {kind!r}")
        raise typer.Exit(2)
    if not synthetic and file is None:
        err.print("[red]error:[/red] give --file FILE.jsonl or --synthetic")
        raise typer.Exit(2)
    if file is not None and not file.exists():
        err.print(f"[red]error:[/red] no such file: {file}")
        raise typer.Exit(2)
    try:
        ensure_topics(settings)
    except Exception as exc:
        raise fail(
            RecstreamError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}")
        ) from exc

    batches: list[tuple[Kind, list[tuple[int, Any]]]] = []
    if synthetic:
        from recstream.evaluation.synthetic import SyntheticConfig, generate

        data = generate(
            SyntheticConfig(
                n_items=items, n_users=users, events_per_user=events_per_user, seed=seed
            )
        )
        batches.append(("items", list(enumerate(data.items, start=1))))
        batches.append(("events", list(enumerate(data.events, start=1))))
    else:
        assert file is not None
        batches.append(("events" if kind == "events" else "items", list(read_jsonl(file))))

    bad = 0
    with Progress(console=err, transient=False) as progress:
        for batch_kind, records in batches:
            task = progress.add_task(f"{batch_kind}", total=len(records))

            class _Tick:
                def advance(self, task: Any = task) -> None:
                    progress.advance(task)

            report = do_produce(
                settings,
                batch_kind,
                records,
                rate=rate,
                send_invalid=send_invalid,
                progress=_Tick(),
            )
            for lineno, reason in report.invalid[:50]:
                err.print(f"[yellow]{batch_kind} line {lineno}:[/yellow] {reason}")
            if len(report.invalid) > 50:
                err.print(f"... and {len(report.invalid) - 50} more invalid lines")
            bad += len(report.invalid)
            console.print(
                f"{batch_kind}: sent {report.sent} records in {report.elapsed_s:.1f} s"
                f" ({len(report.invalid)} invalid{' sent anyway' if send_invalid else ' skipped'})"
            )
    if bad and not send_invalid:
        raise typer.Exit(1)


# --- tail --------------------------------------------------------------------------------------
@app.command()
def tail(
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest list.")] = False,
    timeout: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    max_lists: Annotated[int | None, typer.Option("--max", help="Stop after N lists.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print raw JSON lines.")] = False,
) -> None:
    """Pretty-print the recommendations topic as lists arrive."""
    from recstream.tail import iter_lists
    from recstream.tail import tail as do_tail

    settings = settings_or_exit()
    if as_json:
        lists = iter_lists(settings, from_beginning=from_beginning, timeout_s=timeout)
        for n, rec in enumerate(lists, start=1):
            sys.stdout.write(json.dumps(rec) + "\n")
            if max_lists is not None and n >= max_lists:
                break
        return
    do_tail(settings, from_beginning=from_beginning, timeout_s=timeout, max_lists=max_lists)


# --- demo --------------------------------------------------------------------------------------
@app.command()
def demo(
    duration: Annotated[float, typer.Option(help="Seconds to run.")] = 60.0,
    forever: Annotated[bool, typer.Option(help="Run until Ctrl-C.")] = False,
    users: Annotated[int, typer.Option(help="Synthetic users.")] = 30,
    items: Annotated[int, typer.Option(help="Synthetic items.")] = 300,
    rate: Annotated[float, typer.Option(help="Events per second.")] = 20.0,
    seed: Annotated[int, typer.Option(help="Seed of the generator.")] = 0,
) -> None:
    """Broker + worker + generated users: watch lists stream out, then stop what was started."""
    from recstream.demo import run_demo

    settings = settings_or_exit()
    try:
        run_demo(
            settings,
            duration_s=None if forever else duration,
            n_users=users,
            n_items=items,
            rate=rate,
            seed=seed,
            console=console,
        )
    except RecstreamError as exc:
        raise fail(exc) from exc


# --- inspect -----------------------------------------------------------------------------------
@inspect_app.command("user")
def inspect_user(
    user_id: Annotated[str, typer.Argument(help="The user to show.")],
    url: Annotated[
        str | None, typer.Option(help="A worker's web address (default: this machine's).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A live user's decayed interests, category posterior, weights and state size."""
    import urllib.error
    import urllib.parse
    import urllib.request

    from rich.table import Table

    settings = settings_or_exit()
    base = url or f"http://{settings.web_host}:{settings.web_port}"
    target = f"{base}/users/{urllib.parse.quote(user_id, safe='')}/"
    try:
        with urllib.request.urlopen(target, timeout=10) as resp:
            report = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise fail(
            RecstreamError(f"{target}: {exc.code} {exc.read().decode(errors='replace')}")
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise fail(
            RecstreamError(
                f"no worker answers at {base} ({exc}); "
                "start one with `recstream worker` or pass --url"
            )
        ) from exc
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    console.print(
        f"[bold]user {report['user_id']}[/bold]: {report['event_count']} events, last at "
        f"{report['last_ts']:.0f} ({report['last_event_id']}), "
        f"state {report['state_bytes']} bytes, posterior entropy {report['entropy_nats']} nats, "
        f"{report['feedback_count']} feedback updates"
    )
    for horizon, items in report["top_items"].items():
        console.print(
            f"{horizon} horizon: "
            + ", ".join(f"{i['item_id']} ({i['similarity']:.3f})" for i in items)
        )
    table = Table(title="category posterior (mean, 90% credible interval)")
    table.add_column("category")
    table.add_column("mean", justify="right")
    table.add_column("90% interval", justify="right")
    for row in report["posterior"]:
        table.add_row(
            row["category"], f"{row['mean']:.3f}", f"[{row['ci90'][0]:.3f}, {row['ci90'][1]:.3f}]"
        )
    console.print(table)
    console.print("weights: " + ", ".join(f"{k}={v:.3f}" for k, v in report["weights"].items()))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
