"""The ``touchstream`` command line."""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import pydantic
import typer
from rich.console import Console
from rich.table import Table

from schemas import EventDecoder, EventError, TouchpointEvent
from schemas.jsonschema import render_schema
from service.cli_errors import CliError, Exit, config_file_error, settings_error, storage_error
from service.settings import Settings
from streams.engine.config import ContinuousWindow, EngineConfig
from streams.engine.engine import Engine, ScopeScore
from streams.sources import airline

try:  # typer vendors its own copy of click since 0.22; older ones use click itself
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import (  # type: ignore[assignment]
        ClickException,
        NoArgsIsHelpError,
        UsageError,
    )

EPILOG = ("Exit codes: 0 done; 1 unexpected error (a bug: run with --debug for the "
          "traceback); 2 wrong usage; 3 a setting is wrong; 4 the data directory cannot be "
          "used; 5 the address cannot be bound; 6 the destination is unreachable or refused; "
          "130 interrupted.")

app = typer.Typer(help="touchstream: live customer-experience monitoring.",
                  no_args_is_help=True, pretty_exceptions_enable=False, epilog=EPILOG)
console = Console(width=110)
log = logging.getLogger("touchstream")
_debug = False


@app.callback()
def _root(debug: Annotated[bool, typer.Option(
        "--debug", help="Print tracebacks and debug logs instead of one-line errors.")] = False,
          ) -> None:
    """touchstream: live customer-experience monitoring."""
    # ``main`` reads --debug itself (it may appear anywhere); this declares it for --help.


def _settings(**overrides: Any) -> Settings:
    """The service settings with command-line overrides; a wrong one is a one-line error."""
    try:
        settings = Settings()
        return settings.model_copy(update=overrides) if overrides else settings
    except (pydantic.ValidationError, ValueError) as exc:
        raise settings_error(exc) from exc


def _engine_config(settings: Settings, default: EngineConfig | None = None) -> EngineConfig:
    """The engine configuration file's contents, or ``default`` (built-in) without one."""
    if settings.engine_config is None and default is not None:
        return default
    try:
        config = settings.load_engine_config()
        settings.load_detection_config(config)
    except (OSError, ValueError) as exc:  # also JSON and validation errors
        variable, path = ("TOUCHSTREAM_ENGINE_CONFIG", settings.engine_config)
        if settings.detection_config is not None and "detection" in repr(exc).lower():
            variable, path = ("TOUCHSTREAM_DETECTION_CONFIG", settings.detection_config)
        raise config_file_error(variable, path, exc) from exc
    return config

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


def say(text: str) -> None:
    """One line of output, as it is: no markup, no highlighting, no wrapping."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


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
    say(f"{engine.counters['accepted']:,} events from {path.name}; "
                  f"{engine.counters['not_applicable']:,} 'not applicable' answers kept out "
                  "of the scores")
    for scope in (("touchpoint",), ("segment",), ("channel",)):
        rows = engine.scores("continuous", "30d", scope=scope)
        console.print(_table(f"by {scope[0]}", rows))
    bands = engine.journeys.by_channel_count("flight")
    table = Table(title="flight journeys by number of channels used")
    for column in ("channels", "journeys", "journey score (0-100)"):
        table.add_column(column, justify="right", no_wrap=True)
    for band, value in bands.items():
        if value["n"]:
            table.add_row(band, f"{value['n']:,}", _fmt(value["score"], 1))
    console.print(table)


@app.command("score")
def score_command(
    path: Annotated[Path, typer.Argument(help="A JSONL file of touchpoint events.",
                                         exists=True, dir_okay=False)],
    window: Annotated[str, typer.Option(help="Continuous window name.")] = "7d",
    scope: Annotated[str, typer.Option(help="Dimensions, comma separated.")] = "",
) -> None:
    """Score a JSONL file of events; rejects are listed with every problem (field and
    reason) of each."""
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
    windows = [w.name for w in engine.config.continuous]
    if window not in windows:
        raise typer.BadParameter(f"{window!r} is not a window (choose {', '.join(windows)})",
                                 param_hint="--window")
    unknown = [d for d in dims if (d,) not in engine.config.scopes]
    if unknown or (dims and dims not in engine.config.scopes):
        choices = ", ".join(",".join(sc) for sc in engine.config.scopes if sc)
        raise typer.BadParameter(f"{scope!r} is not a scored scope (choose {choices})",
                                 param_hint="--scope")
    console.print(_table(f"{window}, by {scope or 'overall'}",
                         engine.scores("continuous", window, scope=dims)))
    say(f"events: accepted {engine.counters['accepted']:,}, late {late:,}, "
                  f"duplicates {duplicates:,}, rejected {len(rejects):,}")
    for reject in rejects[:20]:  # every problem of the event, in the schema's order
        problems = "; ".join(f"{p['field']}: {p['reason']}" for p in reject["problems"])
        say(f"  rejected line {reject['line']}: {problems}")


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
    from service.demo import demo_detection, demo_engine_config
    from service.embedded import serve
    from service.traffic import parse_drop, parse_duration

    overrides = {k: v for k, v in {"host": host, "port": port, "data_dir": data_dir}.items()
                 if v is not None}
    try:
        drops = [parse_drop(d) for d in drop or []]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--drop") from None
    try:
        past = parse_duration(history)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--history") from None
    settings = _settings(**overrides)
    # The demo (--simulate) scores against the demo's targets unless a file is named.
    config = _engine_config(settings, demo_engine_config() if simulate > 0 else None)
    detection = (demo_detection(config) if simulate > 0 and settings.detection_config is None
                 else None)
    serve(settings, simulate=simulate, drops=drops, history=past, config=config,
          detection=detection)


@app.command("simulate")
def simulate_command(
    to: Annotated[str, typer.Option(
        help="http://host:port, kafka://host:port/topic, or a .jsonl file.")],
    rate: Annotated[float, typer.Option(help="Events per second.")] = 20.0,
    duration: Annotated[str, typer.Option(help="How long, e.g. 90s, 10m, 2h.")] = "10m",
    seed: Annotated[int | None, typer.Option(
        help="Same seed, same traffic and event ids (default: a fresh seed per run, so "
             "every run sends new events).")] = None,
    drop: Annotated[list[str] | None, typer.Option(
        help="field=value:points:after[:duration], e.g. channel=chat:15:10m.")] = None,
    live: Annotated[bool, typer.Option(
        help="Pace in real time, stamped now; --no-live writes event time at full speed "
             "from now minus the duration.")] = True,
    api_key: Annotated[str | None, typer.Option(envvar="TOUCHSTREAM_API_KEY",
                                                help="Key with the write scope.")] = None,
    batch_size: Annotated[int, typer.Option(help="Events per request/flush.")] = 500,
    wait: Annotated[float, typer.Option(
        help="kafka:// only: seconds to wait for the workers to count what was sent, "
             "and report what they made of it (0: do not wait).")] = 60.0,
) -> None:
    """Realistic synthetic traffic: segments, journeys across channels, many languages."""
    from service.traffic import format_duration, fresh_seed, parse_drop, parse_duration
    from streams.sources.simulator import Simulator, paced

    if rate <= 0:
        raise typer.BadParameter("must be more than 0", param_hint="--rate")
    try:
        span = parse_duration(duration)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--duration") from None
    try:
        drops = [parse_drop(d) for d in drop or []]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--drop") from None
    sink = _open_sink(to, api_key, batch_size)
    start = datetime.now(UTC) - (timedelta(0) if live else span)
    used = seed if seed is not None else fresh_seed()
    sim = Simulator(seed=used, rate=rate, start=start, drops=drops)
    stream = sim.events(duration=span)
    source = paced(stream, rate) if live else stream
    say(f"simulating {format_duration(span)} of traffic at {rate:g} events/s to {to} "
        f"(seed {used}{'' if seed is not None else '; --seed repeats a run'})")
    report, workers = _deliver(source, sink, batch_size, int(rate * span.total_seconds()),
                               to, wait)
    _summary(report, repeat_hint="the same --seed as an earlier run sends the same event "
                                 "ids; leave --seed out for new ones" if seed is not None
             else "these event ids were sent there before", workers=workers)


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
    wait: Annotated[float, typer.Option(
        help="kafka:// only: seconds to wait for the workers to count what was sent, "
             "and report what they made of it (0: do not wait).")] = 60.0,
    backfill: Annotated[bool, typer.Option(
        "--backfill", help="Load history into a running system: counted in every window "
                           "and calendar period the state keeps, however old (older is "
                           "'too old'); no follow-ups, never pages.")] = False,
) -> None:
    """Send a file of events somewhere, with a progress bar and a summary of outcomes."""
    from service.traffic import file_events, rate_limited

    if rate is not None and rate <= 0:
        raise typer.BadParameter("must be more than 0", param_hint="--rate")
    sink = _open_sink(to, api_key, batch_size, backfill)
    say(f"replaying {path} to {to}" + (" as history (backfill)" if backfill else ""))
    report, workers = _deliver(rate_limited(file_events(path, None), rate), sink, batch_size,
                               None, to, wait)
    _summary(report, repeat_hint=f"{path.name} was sent there before", workers=workers,
             late_word="too old" if backfill else "late")


def _open_sink(to: str, api_key: str | None, batch_size: int, backfill: bool = False) -> Any:
    from service.traffic import open_sink

    if batch_size < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--batch-size")
    try:
        return open_sink(to, api_key, batch_size, backfill)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--to") from None


def _deliver(events: Any, sink: Any, batch_size: int, total: int | None, to: str,
             wait: float) -> tuple[Any, Any]:
    """Send, and for a Kafka destination, what the workers made of it: their
    ``Outcomes``, or why that cannot be known (a string), or None when not asked."""
    if not to.startswith("kafka://") or wait <= 0:
        return _run_pump(events, sink, batch_size, total, to), None
    from streams.worker import outcomes

    if not _debug:  # the readers' consumers would log each subscription over the summary
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        settings, config = _kafka_settings(to)
    except CliError as exc:
        report = _run_pump(events, sink, batch_size, total, to)
        return report, exc.cause
    try:
        marks: Any = asyncio.run(outcomes.before(settings, config, timeout=min(wait, 10.0)))
    except outcomes.OutcomesUnknown as exc:
        marks = f"before sending, {exc}"
    report = _run_pump(events, sink, batch_size, total, to)
    if isinstance(marks, str):
        return report, marks
    try:
        return report, asyncio.run(outcomes.after(settings, config, marks, timeout=wait))
    except outcomes.OutcomesUnknown as exc:
        return report, str(exc)


def _kafka_settings(to: str) -> tuple[Any, Any]:
    """The workers' settings (TOUCHSTREAM_* and the config file) for ``kafka://host/topic``:
    where their view and dead letters are."""
    from service.traffic import kafka_target
    from streams.worker.settings import WorkerSettings

    bootstrap, topic = kafka_target(to)
    try:
        settings = WorkerSettings(kafka_bootstrap=bootstrap, topic_touchpoints=topic)
        return settings, settings.load_engine_config()
    except (pydantic.ValidationError, ValueError, OSError) as exc:
        raise CliError(f"the workers' settings cannot be read ({exc})", "",
                       Exit.CONFIG) from None


def _run_pump(events: Any, sink: Any, batch_size: int, total: int | None, to: str) -> Any:
    """Send ``events`` to ``sink`` with a progress bar; a refusing or unreachable
    destination is a one-line error that says what was delivered before it."""
    from streams.sources.sinks import SinkAuthError, SinkError

    try:
        return asyncio.run(_pump(events, sink, batch_size, total))
    except SinkAuthError as exc:
        raise CliError(f"{to} refused the API key: {exc}",
                       "set TOUCHSTREAM_API_KEY (or --api-key) to a key with the write "
                       "scope; `touchstream serve` writes one to data/dev-api-key",
                       Exit.DESTINATION) from exc
    except SinkError as exc:
        raise CliError(f"cannot deliver to {to}: {exc}", _reach_fix(to),
                       Exit.DESTINATION) from exc
    except OSError as exc:  # a file destination that cannot be written
        raise CliError(f"cannot write {to}: {exc.strerror or exc}",
                       "choose a writable path for --to", Exit.DESTINATION) from exc


def _reach_fix(to: str) -> str:
    if to.startswith("kafka://"):
        return ("start a broker there (python deploy/kafka/broker.py start) or fix the "
                "address in --to")
    return "start `touchstream serve` (or `touchstream api`) there, or fix the URL in --to"


async def _pump(events: Any, sink: Any, batch_size: int, total: int | None) -> Any:
    from rich.progress import Progress

    from streams.sources.sinks import pump

    with Progress(console=console, transient=False) as progress:
        task = progress.add_task("sending", total=total)
        try:
            return await pump(events, sink, batch_size=batch_size,
                              on_report=lambda r: progress.advance(task, r.sent))
        finally:
            await sink.close()


def _summary(report: Any, repeat_hint: str, workers: Any = None,
             late_word: str = "late") -> None:
    """What the destination made of the events, with rejects and lates by reason. For
    Kafka, the broker's acknowledgements, then what the workers counted (or why that
    cannot be known). ``late_word``: ``too old`` for a backfill."""
    if workers is None:
        say(f"sent {report.sent:,}: accepted {report.accepted:,}, duplicates "
            f"{report.duplicates:,}, {late_word} {report.late:,}, rejected "
            f"{report.rejected:,}")
        _reasons(report.reasons, report.late_reasons, late_word)
        outcome = report
    else:
        say(f"sent {report.sent:,}: stored by the broker {report.accepted:,}, refused "
            f"{report.rejected:,}")
        _reasons(report.reasons, Counter())
        if isinstance(workers, str):
            say(f"what the workers counted is unknown: {workers}")
            return
        others = workers.records - report.accepted
        say(f"counted by the workers: accepted {workers.accepted:,}, duplicates "
            f"{workers.duplicates:,}, {late_word} {workers.late:,}, rejected "
            f"{workers.rejected:,}"
            + (f" (with {others:,} records others sent meanwhile)" if others > 0 else ""))
        _reasons(workers.reasons, workers.late_reasons, late_word)
        outcome = workers
    total = outcome.accepted + outcome.duplicates + outcome.late + outcome.rejected
    if total and outcome.duplicates == total:
        say(f"every event was a duplicate: the destination had these event ids "
            f"already ({repeat_hint})")


def _reasons(rejected: Counter[str], late: Counter[str], late_word: str = "late") -> None:
    for title, reasons in (("rejected", rejected), (late_word, late)):
        for reason, count in reasons.most_common(10):
            say(f"  {title:<8} {count:>7,}  {reason}")
        if len(reasons) > 10:
            say(f"  {title} (and {len(reasons) - 10} more reasons)")


@app.command("worker")
def worker_command() -> None:
    """Run one Kafka worker (faust-streaming); settings from TOUCHSTREAM_* variables and
    the TOUCHSTREAM_CONFIG file.

    Start as many as you like with the same TOUCHSTREAM_APP_ID: they share the input
    partitions; see streams/worker/README.md.
    """
    from streams.worker.__main__ import main as worker_main
    from streams.worker.settings import WorkerSettings

    try:
        settings = WorkerSettings()
    except (pydantic.ValidationError, ValueError) as exc:
        raise settings_error(exc) from exc
    worker_main(settings)


@app.command("api")
def api_command(
    host: Annotated[str | None, typer.Option(help="Bind address (TOUCHSTREAM_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (TOUCHSTREAM_PORT).")] = None,
) -> None:
    """Serve the HTTP API over a Kafka deployment (topics and bootstrap as the workers')."""
    from service.kafka import serve as serve_kafka
    from streams.worker.settings import WorkerSettings

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = _settings(**overrides)
    try:
        worker = WorkerSettings()
    except (pydantic.ValidationError, ValueError) as exc:
        raise settings_error(exc) from exc
    serve_kafka(settings, worker)


@app.command("schema")
def schema_command() -> None:
    """Print the JSON Schema of a touchpoint event."""
    sys.stdout.write(render_schema())


def run(args: list[str]) -> int:
    """Run the command line on ``args``; returns the exit code (README: Exit codes).

    Expected failures print one line on stderr, ``touchstream <command>: <cause> —
    <fix>``; with ``--debug`` (anywhere in ``args``) they and unexpected errors print
    their traceback instead.
    """
    global _debug
    _debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    logging.basicConfig(level=logging.DEBUG if _debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not _debug:
        # httpx logs one line per request, over the progress bar; kafka-python (the
        # simulate/replay producer only) logs each failed connection attempt, and its
        # final failure reaches the user as the one-line error.
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    prog = "touchstream"
    try:
        result = app(args=args, prog_name=prog, standalone_mode=False)
        return int(result) if isinstance(result, int) else Exit.OK
    except NoArgsIsHelpError as exc:
        if exc.ctx is not None:
            help_text = exc.ctx.get_help()  # rich help prints itself and returns ""
            if help_text:
                sys.stdout.write(help_text + "\n")
        return Exit.USAGE
    except UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else prog
        _fail(CliError(exc.format_message(), f"see '{where} --help'", Exit.USAGE), where)
        return Exit.USAGE
    except ClickException as exc:
        _fail(CliError(exc.format_message(), "", Exit.USAGE), prog)
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write(f"{prog}: interrupted\n")
        return Exit.INTERRUPTED
    except CliError as exc:
        _fail(exc, _command(prog, args))
        return exc.code
    except Exception as exc:
        from streams.embedded import StorageError

        if isinstance(exc, StorageError):
            error = storage_error(exc.path, exc.reason)
        else:
            error = CliError(f"unexpected error: {type(exc).__name__}: {exc}",
                             "run again with --debug for the traceback, and report it",
                             Exit.UNEXPECTED)
        error.__cause__ = exc
        _fail(error, _command(prog, args))
        return error.code


def _command(prog: str, args: list[str]) -> str:
    command = next((a for a in args if not a.startswith("-")), "")
    return f"{prog} {command}".strip()


def _fail(error: CliError, where: str) -> None:
    if _debug:
        import traceback

        traceback.print_exception(error.__cause__ or error, file=sys.stderr)
    sys.stderr.write(error.line(where) + "\n")


def main() -> None:
    """Entry point of the ``touchstream`` command."""
    sys.exit(run(sys.argv[1:]))


__all__ = ["app", "main", "run"]
