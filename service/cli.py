"""The ``touchstream`` command line."""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from schemas import EventDecoder, EventError, TouchpointEvent
from schemas.jsonschema import render_schema
from service.settings import Settings
from streams.engine.config import ContinuousWindow, EngineConfig
from streams.engine.engine import Engine, ScopeScore
from streams.sources import airline

app = typer.Typer(help="touchstream: live customer-experience monitoring.", no_args_is_help=True)
console = Console(width=110)
log = logging.getLogger("touchstream")

_BATCH = 10_000


def _batches(
    items: Iterable[TouchpointEvent], size: int = _BATCH
) -> Iterator[list[TouchpointEvent]]:
    batch: list[TouchpointEvent] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _table(title: str, rows: list[ScopeScore]) -> Table:
    table = Table(title=title)
    table.add_column(title.split("by ")[-1], no_wrap=True)
    table.add_column("metric", no_wrap=True)
    for column in ("score", "95% interval", "n", "n/a", "top box"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        sc = row.score
        table.add_row(
            " / ".join(row.scope.values()) or "overall",
            row.metric, _fmt(sc.value), f"{_fmt(sc.low)}–{_fmt(sc.high)}", str(sc.n),
            str(sc.not_applicable), _fmt(sc.share),
        )
    return table


@app.command("airline")
def airline_command(
    path: Annotated[Path, typer.Option(help="The survey CSV.")] = airline.DEFAULT_PATH,
    segment_by: Annotated[str, typer.Option(help="class, loyalty or travel.")] = "class",
) -> None:
    """Replay the airline passenger survey through the engine and print its scores."""
    if segment_by not in ("class", "loyalty", "travel"):
        raise typer.BadParameter("choose class, loyalty or travel", param_hint="--segment-by")
    config = EngineConfig(
        scopes=((), ("touchpoint",), ("segment",), ("channel",)),
        continuous=(ContinuousWindow(name="30d", span=30 * 86_400, step=3600),),
        allowed_lateness=0,
    )
    engine = Engine(config)
    decoder = EventDecoder(clock=(airline.DEFAULT_START + timedelta(days=60)).timestamp)
    events = (decoder.convert(e) for e in airline.events(path, segment_by=segment_by))  # type: ignore[arg-type]
    for batch in _batches(events):
        engine.ingest(batch)
    console.print(f"{engine.counters['accepted']:,} events from {path.name}; "
                  f"{engine.counters['not_applicable']:,} 'not applicable' answers kept out "
                  "of the scores")
    for scope in (("touchpoint",), ("segment",), ("channel",)):
        rows = engine.scores("continuous", "30d", scope=scope)
        console.print(_table(f"by {scope[0]}", rows))
    bands = engine.journeys.by_channel_count("flight")
    console.print({band: _fmt(v["score"], 1) for band, v in bands.items() if v["n"]})


@app.command("score")
def score_command(
    path: Annotated[Path, typer.Argument(help="A JSONL file of touchpoint events.")],
    window: Annotated[str, typer.Option(help="Continuous window name.")] = "7d",
    scope: Annotated[str, typer.Option(help="Dimensions, comma separated.")] = "",
) -> None:
    """Score a JSONL file of events; rejects are listed with field and reason."""
    engine = Engine(EngineConfig())
    decoder = EventDecoder()
    rejects: list[dict[str, Any]] = []

    def accepted() -> Iterator[TouchpointEvent]:
        with path.open("rb") as handle:
            for line_no, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    yield decoder.decode(line)
                except EventError as exc:
                    rejects.append({"line": line_no, **exc.as_dict()})

    late = duplicates = 0
    for batch in _batches(accepted()):
        result = engine.ingest(batch)
        late += len(result.late)
        duplicates += len(result.duplicates)
    dims = tuple(d for d in scope.split(",") if d)
    console.print(_table(f"{window}, by {scope or 'overall'}",
                         engine.scores("continuous", window, scope=dims)))
    console.print(f"accepted {engine.counters['accepted']}, late {late}, "
                  f"duplicates {duplicates}, rejected {len(rejects)}")
    for reject in rejects[:20]:
        console.print(reject)


@app.command("serve")
def serve_command(
    host: Annotated[str | None, typer.Option(help="Bind address (TOUCHSTREAM_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (TOUCHSTREAM_PORT).")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        help="Where SQLite state lives (TOUCHSTREAM_DATA_DIR).")] = None,
    simulate: Annotated[float, typer.Option(
        help="Also feed simulated traffic at this many events/s (0: none).")] = 0.0,
    drop: Annotated[list[str] | None, typer.Option(
        help="With --simulate: inject a drop, field=value:points:after[:duration], "
             "e.g. channel=chat:15:10m. Repeatable.")] = None,
    history: Annotated[str, typer.Option(
        help="With --simulate: simulated past traffic to load first (a baseline).")] = "24h",
) -> None:
    """Run the embedded service: engine, API and /metrics in one process, state in SQLite."""
    from service.embedded import serve
    from service.traffic import parse_drop, parse_duration

    settings = Settings()
    overrides = {k: v for k, v in {"host": host, "port": port, "data_dir": data_dir}.items()
                 if v is not None}
    try:
        drops = [parse_drop(d) for d in drop or []]
        past = parse_duration(history)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    serve(settings.model_copy(update=overrides), simulate=simulate, drops=drops, history=past)


@app.command("simulate")
def simulate_command(
    to: Annotated[str, typer.Option(
        help="http://host:port, kafka://host:port/topic, or a .jsonl file.")],
    rate: Annotated[float, typer.Option(help="Events per second.")] = 20.0,
    duration: Annotated[str, typer.Option(help="How long, e.g. 90s, 10m, 2h.")] = "10m",
    seed: Annotated[int, typer.Option(help="Same seed, same traffic.")] = 0,
    drop: Annotated[list[str] | None, typer.Option(
        help="field=value:points:after[:duration], e.g. channel=chat:15:10m.")] = None,
    live: Annotated[bool, typer.Option(
        help="Pace in real time, stamped now; --no-live writes event time at full speed "
             "from now minus the duration.")] = True,
    api_key: Annotated[str | None, typer.Option(envvar="TOUCHSTREAM_API_KEY",
                                                help="Key with the write scope.")] = None,
    batch_size: Annotated[int, typer.Option(help="Events per request/flush.")] = 500,
) -> None:
    """Realistic synthetic traffic: segments, journeys across channels, many languages."""
    from service.traffic import open_sink, parse_drop, parse_duration
    from streams.sources.simulator import Simulator, paced

    try:
        span = parse_duration(duration)
        drops = [parse_drop(d) for d in drop or []]
        sink = open_sink(to, api_key, batch_size)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    start = datetime.now(UTC) - (timedelta(0) if live else span)
    sim = Simulator(seed=seed, rate=rate, start=start, drops=drops)
    stream = sim.events(duration=span)
    source = paced(stream, rate) if live else stream
    report = asyncio.run(_pump(source, sink, batch_size, int(rate * span.total_seconds())))
    _summary(report)


@app.command("replay")
def replay_command(
    path: Annotated[Path, typer.Argument(help="JSONL events, or the airline survey CSV.",
                                         exists=True, dir_okay=False)],
    to: Annotated[str, typer.Option(
        help="http://host:port, kafka://host:port/topic, or a .jsonl file.")],
    rate: Annotated[float | None, typer.Option(help="Events/s cap (default: flat out).")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="TOUCHSTREAM_API_KEY",
                                                help="Key with the write scope.")] = None,
    batch_size: Annotated[int, typer.Option(help="Events per request/flush.")] = 1000,
) -> None:
    """Send a file of events somewhere, with a progress bar and a summary of outcomes."""
    from service.traffic import file_events, open_sink, rate_limited

    try:
        sink = open_sink(to, api_key, batch_size)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    report = asyncio.run(_pump(rate_limited(file_events(path, None), rate), sink,
                               batch_size, None))
    _summary(report)


async def _pump(events: Any, sink: Any, batch_size: int, total: int | None) -> Any:
    from rich.progress import Progress

    from streams.sources.sinks import pump

    with Progress(console=console) as progress:
        task = progress.add_task("sending", total=total)
        try:
            return await pump(events, sink, batch_size=batch_size,
                              on_report=lambda r: progress.advance(task, r.sent))
        finally:
            await sink.close()


def _summary(report: Any) -> None:
    console.print(f"sent {report.sent:,}: accepted {report.accepted:,}, duplicates "
                  f"{report.duplicates:,}, late {report.late:,}, rejected {report.rejected:,}")
    for reason, count in report.reasons.most_common(10):
        console.print(f"  {count:>7,}  {reason}")


@app.command("worker")
def worker_command() -> None:
    """Run one Kafka worker (faust-streaming); settings from TOUCHSTREAM_* variables.

    Start as many as you like with the same TOUCHSTREAM_APP_ID: they share the input
    partitions; see streams/worker/README.md.
    """
    from streams.worker.__main__ import main as worker_main

    worker_main()


@app.command("api")
def api_command(
    host: Annotated[str | None, typer.Option(help="Bind address (TOUCHSTREAM_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (TOUCHSTREAM_PORT).")] = None,
) -> None:
    """Serve the HTTP API over a Kafka deployment (topics and bootstrap as the workers')."""
    from service.kafka import serve as serve_kafka
    from streams.worker.settings import WorkerSettings

    settings = Settings()
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    serve_kafka(settings.model_copy(update=overrides), WorkerSettings())


@app.command("schema")
def schema_command() -> None:
    """Print the JSON Schema of a touchpoint event."""
    sys.stdout.write(render_schema())


def main() -> None:
    """Entry point of the ``touchstream`` command."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app()


__all__ = ["app", "main"]
