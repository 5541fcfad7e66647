"""Erasure on request (issue 21): ``Engine.erase_customer`` removes a customer's history,
baseline and journeys; no byte of their id or comments stays in the snapshot, and the
aggregates (every score) stay exactly as they were."""

from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Any

import msgspec
from engine_reference import BASE, make_event

from schemas import TouchpointEvent
from streams.engine.config import CustomerConfig, EngineConfig
from streams.engine.customers import CustomerBook
from streams.engine.engine import Engine, Erased

CONFIG = EngineConfig(scopes=((), ("channel",), ("segment",)), journey_timeout=3600)
ERASED = "kúnni-Þórunn-客户-0042"
COMMENT = "Hringið í mig, Þórunn Jónsdóttir, +354 555 1234 — 电话很差"
CHANNELS = ("web", "chat", "phone")


def _events(n: int, seed: int, *, start: int = 0) -> list[TouchpointEvent]:
    """``n`` events of 40 customers (the erased one among them), with journeys (some
    ended, some open), comments and every kind of signal."""
    rng = random.Random(seed)
    out = []
    for i in range(start, start + n):
        customer = ERASED if i % 7 == 0 else f"c-{rng.randrange(40)}"
        fields: dict[str, Any] = {
            "event_id": f"e-{i}", "occurred_at": BASE + timedelta(seconds=30 * i),
            "customer_id": customer, "channel": rng.choice(CHANNELS),
            "segment": rng.choice(("smb", "enterprise")),
            "journey_id": f"j-{customer}-{i // 20}", "journey_type": "support",
            "journey_end": i % 20 == 19,
        }
        if customer == ERASED:
            fields["comment"] = COMMENT
        kind = rng.choice(("csat", "nps", "ces", "outcome"))
        value: Any = {"csat": rng.randint(1, 5), "nps": rng.randint(0, 10),
                      "ces": rng.randint(1, 7),
                      "outcome": rng.choice(("resolved", "unresolved"))}[kind]
        out.append(make_event(kind=kind, value=value, **fields))
    return out


def _aggregates(engine: Engine) -> dict[str, Any]:
    """Everything of a snapshot but the customers and the journeys themselves."""
    state = msgspec.msgpack.decode(engine.snapshot())
    journeys = state.pop("journeys")
    del state["customers"]
    state["bands"] = journeys["bands"]
    return state


def _scores(engine: Engine) -> list[Any]:
    out = []
    for family, windows in (("continuous", ("15m", "1h", "24h", "7d")),
                            ("periodic", ("day", "week"))):
        for window in windows:
            for scope in CONFIG.scopes:
                out += [(s.scope, s.metric, s.score, s.window, s.late_answers)
                        for s in engine.scores(family, window, scope=scope)]  # type: ignore[arg-type]
    return out


def test_no_byte_of_the_id_or_comment_stays_and_the_scores_do() -> None:
    engine = Engine(CONFIG)
    t0 = int(BASE.timestamp())
    engine.start_pulse("chat-study", "Chat", {"channel": ["chat"]}, t0, t0 + 86_400,
                       t0 - 86_400, t0)  # its counts stay, as every aggregate does
    engine.ingest(_events(600, seed=1))  # a batch large enough for the column-wise path
    for k in range(5):  # and small ones
        engine.ingest(_events(40, seed=10 + k, start=600 + 40 * k))
    before = engine.snapshot()
    assert ERASED.encode() in before  # held: as a customer and in its journeys
    assert COMMENT.encode() not in before  # comments are never kept
    others = {cid: engine.customers.get(cid) for cid in engine.customers.customers
              if cid != ERASED}
    at_risk = [cid for cid in engine.customers.at_risk() if cid != ERASED]
    aggregates, scores = _aggregates(engine), _scores(engine)
    pulse = engine.pulses["chat-study"].results()
    assert pulse and pulse[0][1].n > 0
    theirs = sum(1 for j in [*engine.journeys.open.values(), *engine.journeys.closed.values()]
                 if j.customer_id == ERASED)
    assert theirs > 1

    erased = engine.erase_customer(ERASED)

    assert erased == Erased(customers=1, journeys=theirs)
    assert erased.as_dict() == {"customers": 1, "journeys": theirs}
    after = engine.snapshot()
    for needle in (ERASED, COMMENT, "Þórunn", "客户", "555 1234"):
        assert needle.encode() not in after, needle
        assert needle.encode("utf-16-le") not in after, needle
    assert engine.customers.get(ERASED) is None
    assert {cid: engine.customers.get(cid) for cid in engine.customers.customers} == others
    assert engine.customers.at_risk() == at_risk
    assert all(j.customer_id != ERASED for j in engine.journeys.open.values())
    assert all(j.customer_id != ERASED for j in engine.journeys.closed.values())
    assert _aggregates(engine) == aggregates
    assert _scores(engine) == scores
    assert engine.pulses["chat-study"].results() == pulse

    # Idempotent; the snapshot restores to the same state, which goes on as usual.
    assert engine.erase_customer(ERASED) == Erased()
    assert engine.erase_customer("never-seen") == Erased()
    assert engine.snapshot() == after
    restored = Engine.restore(CONFIG, after)
    assert restored.snapshot() == after
    more = [e for e in _events(200, seed=99, start=2000) if e.customer_id != ERASED]
    engine.ingest(more)
    restored.ingest(more)
    assert restored.snapshot() == engine.snapshot()


def test_the_book_after_an_erasure_is_the_book_that_never_saw_them() -> None:
    cfg = CustomerConfig(recent=3, min_recent=2, min_history=2)
    rng = random.Random(5)
    signals = [(f"c-{rng.randrange(30)}", rng.choice(("a", "b")),
                math.nan if rng.random() < 0.1 else rng.random(), i) for i in range(3000)]
    book, never = CustomerBook(cfg), CustomerBook(cfg)
    for chunk in range(0, len(signals), 500):  # column-wise batches
        part = signals[chunk:chunk + 500]
        book.add_many(*map(list, zip(*part, strict=True)))
        kept = [s for s in part if s[0] != "c-7"]
        never.add_many(*map(list, zip(*kept, strict=True)))
    assert book.erase("c-7") is True
    assert book.erase("c-7") is False
    assert {c: book.get(c) for c in book.customers} == {c: never.get(c) for c in never.customers}
    assert list(book.customers) == list(never.customers)
    assert book.at_risk() == never.at_risk()
    # It goes on alike, the erased customer coming back as a new one.
    rest = [(c, s, v, 4000 + i) for i, (c, s, v, _) in enumerate(signals[:400])]
    for b in (book, never):
        b.add_many(*map(list, zip(*rest, strict=True)))
    assert {c: book.get(c) for c in book.customers} == {c: never.get(c) for c in never.customers}
    # Erasing the first and the last rows works as well as a middle one.
    for cid in (next(iter(book.customers)), list(book.customers)[-1]):
        assert book.erase(cid) and never.erase(cid)
    assert book.state()["ids"] == never.state()["ids"]
    assert bytes(book.state()["recent"]) == bytes(never.state()["recent"])
