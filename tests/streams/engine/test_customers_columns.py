"""The columnar CustomerBook against the object-per-customer model it replaced.

``ObjectBook`` below is the previous implementation (one dataclass per customer), kept
here as the reference: for any stream of signals the columns must give the same
assessments, bit for bit, the same at-risk list, and restore the old snapshot rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from engine_reference import BASE, make_event
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.engine import customers as customers_module
from streams.engine.config import CustomerConfig, EngineConfig
from streams.engine.customers import CustomerBook
from streams.engine.engine import Engine

T0 = 1_774_648_800
_VARIANCE_FLOOR = 0.01


@dataclass(slots=True)
class ObjectCustomer:
    customer_id: str
    segment: str
    recent: list[float] = field(default_factory=list)
    history_n: int = 0
    history_mean: float = 0.0
    history_m2: float = 0.0
    signals: int = 0
    last_seen: int = 0

    def add(self, value: float, at: int, keep: int) -> None:
        self.signals += 1
        self.last_seen = max(self.last_seen, at)
        self.recent.append(value)
        if len(self.recent) > keep:
            old = self.recent.pop(0)
            self.history_n += 1
            delta = old - self.history_mean
            self.history_mean += delta / self.history_n
            self.history_m2 += delta * (old - self.history_mean)

    def assess(self, cfg: CustomerConfig) -> dict[str, Any]:
        recent_n = len(self.recent)
        recent_mean = sum(self.recent) / recent_n if recent_n else None
        baseline = self.history_mean if self.history_n else None
        trend = None
        at_risk = False
        if recent_mean is not None and baseline is not None:
            trend = recent_mean - baseline
            if recent_n >= cfg.min_recent and self.history_n >= cfg.min_history:
                var = max(self.history_m2 / (self.history_n - 1), _VARIANCE_FLOOR)
                se = math.sqrt(var / self.history_n + var / recent_n)
                at_risk = -trend >= cfg.min_drop and -trend > cfg.z * se
        return {
            "customer_id": self.customer_id, "segment": self.segment,
            "signals": self.signals, "last_seen": self.last_seen,
            "baseline": None if baseline is None else 100 * baseline,
            "baseline_n": self.history_n,
            "recent": None if recent_mean is None else 100 * recent_mean,
            "recent_n": recent_n,
            "trend": None if trend is None else 100 * trend,
            "at_risk": at_risk,
        }


class ObjectBook:
    def __init__(self, cfg: CustomerConfig) -> None:
        self.cfg = cfg
        self.customers: dict[str, ObjectCustomer] = {}

    def add(self, customer_id: str, segment: str, value: float, at: int) -> None:
        customer = self.customers.get(customer_id)
        if customer is None:
            customer = self.customers[customer_id] = ObjectCustomer(customer_id, segment)
        customer.segment = segment
        if math.isnan(value):
            customer.last_seen = max(customer.last_seen, at)
            return
        customer.add(value, at, self.cfg.recent)

    def get(self, customer_id: str) -> dict[str, Any] | None:
        customer = self.customers.get(customer_id)
        return None if customer is None else customer.assess(self.cfg)

    def at_risk(self) -> list[str]:
        return [c.customer_id for c in self.customers.values()
                if c.assess(self.cfg)["at_risk"]]

    def state(self) -> list[list[Any]]:
        return [[c.customer_id, c.segment, c.recent, c.history_n, c.history_mean,
                 c.history_m2, c.signals, c.last_seen] for c in self.customers.values()]


# Satisfaction values as the engine produces them: steps of 1/4, 1/6, 1/10, sentiment
# in -1..1 mapped to 0..1, and NaN for "not applicable".
values = st.one_of(
    st.integers(0, 4).map(lambda v: v / 4),
    st.integers(0, 6).map(lambda v: v / 6),
    st.integers(0, 10).map(lambda v: v / 10),
    st.floats(0.0, 1.0, allow_nan=False),
    st.just(math.nan),
)
signals = st.tuples(st.sampled_from(["c-1", "c-2", "c-3", "c-4", "ü-5"]),
                    st.sampled_from(["smb", "enterprise", "Þjónusta"]), values,
                    st.integers(-5, 10_000))
high = st.one_of(st.sampled_from([1.0, 0.75, 0.9, 5 / 6, 1.0]), st.floats(0.6, 1.0),
                 st.just(math.nan))
low = st.one_of(st.sampled_from([0.0, 0.25, 0.5, 0.75, 0.1]), st.floats(0.0, 0.6))


@st.composite
def drops(draw: st.DrawFn) -> list[tuple[str, str, float, int]]:
    """Customers with a good history and (often) a worse recent run: at-risk candidates."""
    out: list[tuple[str, str, float, int]] = []
    for customer_id in draw(st.lists(st.sampled_from(["c-1", "c-2", "c-3", "c-4", "ü-5"]),
                                     max_size=5, unique=True)):
        before = draw(st.lists(high, max_size=14))
        after = draw(st.lists(low, max_size=8))
        out += [(customer_id, "smb", v, i) for i, v in enumerate(before + after)]
    return out


streams = st.one_of(st.lists(signals, max_size=120), drops(),
                    st.tuples(drops(), st.lists(signals, max_size=40)).map(
                        lambda pair: pair[0] + pair[1]))
configs = st.builds(
    lambda recent, min_recent, min_history, min_drop, z: CustomerConfig(
        recent=recent, min_recent=min(min_recent, recent), min_history=min_history,
        min_drop=min_drop, z=z),
    st.integers(1, 7), st.integers(1, 7), st.integers(2, 8),
    st.sampled_from([0.05, 0.15, 0.25, 0.5]), st.sampled_from([0.5, 1.0, 1.645, 3.0]),
)


def feed(stream: list[tuple[str, str, float, int]], *books: Any) -> None:
    for customer_id, segment, value, at in stream:
        for book in books:
            book.add(customer_id, segment, value, T0 + at)


def assert_same(book: CustomerBook, ref: ObjectBook) -> None:
    assert len(book.customers) == len(ref.customers)
    assert list(book.customers) == list(ref.customers)
    for customer_id in ref.customers:
        assert book.get(customer_id) == ref.get(customer_id)  # exact, not approx
    assert book.get("never") is None
    assert book.at_risk() == ref.at_risk()


@settings(max_examples=150, deadline=None)
@given(configs, streams)
def test_columns_equal_objects(cfg: CustomerConfig, stream: list[Any]) -> None:
    book, ref = CustomerBook(cfg), ObjectBook(cfg)
    feed(stream, book, ref)
    assert_same(book, ref)


@settings(max_examples=60, deadline=None)
@given(configs, streams, st.lists(signals, max_size=40))
def test_snapshot_through_msgpack_then_continue(cfg: CustomerConfig, first: list[Any],
                                                then: list[Any]) -> None:
    book, ref = CustomerBook(cfg), ObjectBook(cfg)
    feed(first, book, ref)
    copy = CustomerBook(cfg)
    copy.restore(msgspec.msgpack.decode(msgspec.msgpack.encode(book.state())))
    assert copy.state() == book.state()
    feed(then, book, copy, ref)
    assert copy.state() == book.state()
    assert_same(copy, ref)


@settings(max_examples=60, deadline=None)
@given(configs, streams, streams)
def test_restores_the_object_rows_of_older_snapshots(cfg: CustomerConfig, first: list[Any],
                                                     then: list[Any]) -> None:
    ref = ObjectBook(cfg)
    feed(first, ref)
    book = CustomerBook(cfg)
    book.restore(msgspec.msgpack.decode(msgspec.msgpack.encode(ref.state())))
    assert_same(book, ref)
    feed(then, book, ref)
    assert_same(book, ref)


def test_engine_restores_a_snapshot_with_the_object_rows() -> None:
    config = EngineConfig(scopes=((),))
    engine = Engine(config)
    ref = ObjectBook(config.customers)
    events = [make_event(event_id=f"e-{i}", customer_id=f"c-{i % 3}",
                         occurred_at=BASE.replace(minute=i), kind="csat", value=1 + i % 5)
              for i in range(40)]
    engine.ingest(events)
    for e in events:
        ref.add(e.customer_id, e.segment, (e.value - 1) / 4,
                int(e.occurred_at.timestamp()))
    state = msgspec.msgpack.decode(engine.snapshot())
    state["customers"] = ref.state()  # what the object layout wrote
    resumed = Engine.restore(config, msgspec.msgpack.encode(state))
    assert resumed.customers.state() == engine.customers.state()
    assert_same(resumed.customers, ref)


def test_restore_refuses_what_it_cannot_read() -> None:
    book = CustomerBook(CustomerConfig())
    book.add("c-1", "smb", 0.5, T0)
    state = book.state()
    with pytest.raises(ValueError, match="keeps 5 recent values"):
        CustomerBook(CustomerConfig(recent=3, min_recent=3)).restore(state)
    bad: list[Any] = [
        {**state, "layout": "columns-99"},
        {**state, "ids": ["c-1", "c-2"]},
        {**state, "ids": [], "segment": b"", "signals": b""},
        [["c-1", "smb", [0.5, 0.5], 0, 0.0, 0.0, 1, T0]],  # 2 recent, 1 signal
        [["c-1", "smb", [], 0, 0.0, 0.0, 0, T0]] * 2,
    ]
    for wrong in bad:
        with pytest.raises(ValueError, match="layout|does not match|do not add up|repeats"):
            book.restore(wrong)
    assert book.state() == state  # a refused snapshot leaves the book as it was


def test_many_customers_in_fixed_width_columns() -> None:
    cfg = CustomerConfig()
    book, ref = CustomerBook(cfg), ObjectBook(cfg)
    for i in range(3000):
        for r in range(1 + i % 13):
            value = math.nan if (i + r) % 11 == 0 else ((i * 7 + r * (i % 3)) % 5) / 4
            if i % 4 == 0:  # a good history, then a fall over the last five
                value = 1.0 - (r > i % 13 - 5) * (i % 5) / 4
            book.add(f"c-{i}", f"s-{i % 4}", value, T0 + r)
            ref.add(f"c-{i}", f"s-{i % 4}", value, T0 + r)
    assert len(book) == 3000
    assert len(book.segments) == 4
    assert_same(book, ref)
    assert 100 < len(book.at_risk()) < 3000
    assert len(book.state()["recent"]) == 8 * cfg.recent * 3000


@pytest.mark.parametrize(("cfg", "flagged"), [
    # Exactly on the thresholds (see test_customers.test_thresholds): the vectorised
    # preselection must not lose a customer the scalar test flags, nor add one.
    (CustomerConfig(min_drop=0.25), True),
    (CustomerConfig(min_drop=0.2500001), False),
    (CustomerConfig(min_drop=0.25, z=3.9), True),
    (CustomerConfig(min_drop=0.25, z=3.952847), True),
    (CustomerConfig(min_drop=0.25, z=3.952848), False),
])
def test_at_risk_on_the_boundary(cfg: CustomerConfig, flagged: bool) -> None:
    book = CustomerBook(cfg)
    for i, value in enumerate([1.0] * 5 + [0.75] * 5):
        book.add("c-1", "smb", value, T0 + i)
    assert book.get("c-1")["at_risk"] is flagged  # type: ignore[index]
    assert book.at_risk() == (["c-1"] if flagged else [])


@settings(max_examples=150, deadline=None)
@given(configs, streams, st.lists(st.integers(0, 160), max_size=5), st.integers(1, 6),
       st.integers(1, 4))
def test_add_many_columnwise_is_add_one_by_one(cfg: CustomerConfig, stream: list[Any],
                                                cuts: list[int], columnwise: int,
                                                round_: int) -> None:
    """Batches added column-wise (in rounds, the tail by the scalar loop) give the same
    columns, bit for bit, as every signal added on its own; thresholds lowered so that
    small batches take the column-wise path."""
    one = CustomerBook(cfg)
    feed(stream, one)
    many = CustomerBook(cfg)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(customers_module, "_COLUMNWISE", columnwise)
        patch.setattr(customers_module, "_COLUMNWISE_ROUND", round_)
        bounds = [0, *sorted(min(c, len(stream)) for c in cuts), len(stream)]
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            chunk = stream[lo:hi]
            many.add_many([c for c, _, _, _ in chunk], [s for _, s, _, _ in chunk],
                          [v for _, _, v, _ in chunk], [T0 + at for _, _, _, at in chunk])
    want, got = one.state(), many.state()
    assert {k: bytes(v) if isinstance(v, memoryview) else v for k, v in got.items()} == {
        k: bytes(v) if isinstance(v, memoryview) else v for k, v in want.items()}
    ref = ObjectBook(cfg)
    feed(stream, ref)
    assert_same(many, ref)
