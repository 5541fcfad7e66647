"""The ``touchstream`` command line."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterable, Iterator
from datetime import timedelta
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
) -> None:
    """Run the embedded service: engine, API and /metrics in one process, state in SQLite."""
    from service.embedded import serve

    settings = Settings()
    overrides = {k: v for k, v in {"host": host, "port": port, "data_dir": data_dir}.items()
                 if v is not None}
    serve(settings.model_copy(update=overrides))


@app.command("schema")
def schema_command() -> None:
    """Print the JSON Schema of a touchpoint event."""
    sys.stdout.write(render_schema())


def main() -> None:
    """Entry point of the ``touchstream`` command."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app()


__all__ = ["app", "main"]
