"""Synthetic customer-experience traffic with the structure real traffic has.

``Simulator`` invents a population of customers (pseudonymous ids) in segments with
different expectations, and walks them through journeys — onboarding, a technical
problem, an upgrade, moving home, a billing question — over one to several touchpoints
across channels, each touchpoint a signal of some kind (CSAT, NPS, CES, a rating on a
declared scale with an n/a code, an outcome, a sentiment score), sometimes with a
comment in one of several languages and scripts. Reviews on social media and periodic
relationship surveys arrive outside journeys.

The model behind the answers is one number per event: the probability (0..100 points)
that the answer is a *good* one (CSAT 4-5, a promoter, easy, top of the scale,
resolved, positive). It starts at a base quality, moves with journey type, channel,
segment expectation and the customer's own temperament, and falls with every extra
channel a journey has used so far (switching channels is friction). An injected
``Drop`` subtracts its points from that probability, so a 15-point drop on chat lowers
chat's CSAT top-2-box share by 0.15 in expectation.

Everything is drawn from ``random.Random`` instances seeded from ``seed``: the same
seed gives the same events, byte for byte; no global random state is touched. Event
time is compressed for demos: events arrive at ``rate`` per second of event time
(Poisson), and a journey's touchpoints are seconds to minutes apart, not days.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

log = logging.getLogger(__name__)

DEFAULT_START: Final = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday, like the airline replay

CHANNELS: Final = ("web", "app", "phone", "chat", "email", "store", "social")
JOURNEY_TYPES: Final = ("onboarding", "technical_problem", "upgrade", "moving_home",
                        "billing_question")
DROP_FIELDS: Final = frozenset({
    "channel", "touchpoint", "segment", "offering", "journey_type", "stage", "owner",
    "contact", "program", "source", "kind",
})
"""Event fields a ``Drop`` may match on."""


@dataclass(frozen=True, slots=True)
class Segment:
    """A customer segment: its share of customers, what it expects, what it buys.

    ``expectation`` is in points of good-answer probability: the same service earns
    ``expectation`` points fewer good answers from this segment than from a neutral one
    (negative: easier to please). ``languages`` weights the languages of its comments.
    """

    name: str
    share: float
    expectation: float
    offerings: tuple[str, ...]
    languages: tuple[tuple[str, float], ...]


SEGMENTS: Final[tuple[Segment, ...]] = (
    Segment("budget", 0.34, -4.0, ("basic", "prepaid"),
            (("en", 0.5), ("fi", 0.2), ("el", 0.1), ("emoji", 0.2))),
    Segment("standard", 0.34, 0.0, ("standard", "family"),
            (("en", 0.5), ("fi", 0.15), ("el", 0.15), ("ja", 0.1), ("emoji", 0.1))),
    Segment("enterprise", 0.16, 8.0, ("business", "premium"),
            (("en", 0.6), ("ja", 0.25), ("fi", 0.15))),
    Segment("Þjónusta", 0.08, 3.0, ("grunnur", "plús"),
            (("is", 0.8), ("en", 0.1), ("emoji", 0.1))),
    Segment("مشتریان ویژه", 0.08, 5.0, ("premium", "ویژه"),
            (("fa", 0.8), ("en", 0.1), ("emoji", 0.1))),
)

BASE_QUALITY: Final = 80.0
CHANNEL_PENALTY: Final = 7.0
"""Points of good-answer probability lost per extra channel a journey has used so far."""
JOURNEY_EFFECT: Final[dict[str, float]] = {
    "onboarding": 2.0, "technical_problem": -10.0, "upgrade": 4.0, "moving_home": -6.0,
    "billing_question": -4.0,
}
CHANNEL_EFFECT: Final[dict[str, float]] = {
    "web": 0.0, "app": 3.0, "phone": -2.0, "chat": 1.0, "email": -5.0, "store": 4.0,
    "social": 0.0,
}

# Which channels a customer reaches for first, by persona (social is for reviews only).
PERSONAS: Final[dict[str, dict[str, float]]] = {
    "digital": {"web": 0.3, "app": 0.3, "chat": 0.25, "email": 0.1, "phone": 0.04,
                "store": 0.01},
    "traditional": {"phone": 0.45, "store": 0.25, "email": 0.15, "web": 0.1, "chat": 0.05},
    "mixed": {"web": 0.18, "app": 0.14, "phone": 0.2, "chat": 0.2, "email": 0.14,
              "store": 0.14},
}
PERSONA_SHARES: Final = (("digital", 0.4), ("traditional", 0.25), ("mixed", 0.35))

# (touchpoint, owner) of a channel, by default and where a journey type has its own.
CHANNEL_TOUCHPOINTS: Final[dict[str, tuple[str, str]]] = {
    "web": ("website", "digital"), "app": ("mobile_app", "digital"),
    "phone": ("support_call", "support"), "chat": ("live_chat", "support"),
    "email": ("email_support", "support"), "store": ("store_visit", "retail"),
    "social": ("review", "marketing"),
}
JOURNEY_TOUCHPOINTS: Final[dict[tuple[str, str], tuple[str, str]]] = {
    ("onboarding", "web"): ("signup", "digital"),
    ("onboarding", "app"): ("app_setup", "digital"),
    ("onboarding", "phone"): ("welcome_call", "support"),
    ("onboarding", "email"): ("welcome_email", "digital"),
    ("technical_problem", "web"): ("help_center", "digital"),
    ("technical_problem", "app"): ("app_diagnostics", "digital"),
    ("technical_problem", "store"): ("repair_desk", "retail"),
    ("upgrade", "web"): ("online_shop", "sales"),
    ("upgrade", "app"): ("in_app_upgrade", "digital"),
    ("upgrade", "phone"): ("sales_call", "sales"),
    ("upgrade", "chat"): ("sales_chat", "sales"),
    ("upgrade", "email"): ("order_confirmation", "sales"),
    ("moving_home", "web"): ("move_form", "logistics"),
    ("moving_home", "phone"): ("moving_line", "logistics"),
    ("moving_home", "email"): ("move_confirmation", "logistics"),
    ("billing_question", "web"): ("billing_portal", "billing"),
    ("billing_question", "app"): ("billing_portal", "billing"),
    ("billing_question", "phone"): ("billing_call", "billing"),
    ("billing_question", "chat"): ("billing_chat", "billing"),
    ("billing_question", "email"): ("invoice_email", "billing"),
}
SURVEY_SOURCES: Final[dict[str, str]] = {
    "web": "web-survey", "app": "app-feedback", "phone": "ivr-survey",
    "chat": "chat-survey", "email": "email-survey", "store": "store-tablet",
    "social": "review-monitor",
}

# Which signal a touchpoint yields, by stage.
STAGE_KINDS: Final[dict[str, tuple[tuple[str, float], ...]]] = {
    "recognize": (("csat", 0.25), ("ces", 0.25), ("rating", 0.3), ("sentiment", 0.2)),
    "request": (("ces", 0.3), ("csat", 0.25), ("rating", 0.1), ("sentiment", 0.15),
                ("outcome", 0.2)),
    "respond": (("csat", 0.35), ("outcome", 0.3), ("sentiment", 0.15), ("rating", 0.1),
                ("ces", 0.1)),
}
END_NPS_SHARE: Final = 0.35
"""Share of journeys whose last touchpoint is a transactional NPS question."""

JOURNEY_LENGTHS: Final[tuple[tuple[int, float], ...]] = (
    (1, 0.2), (2, 0.25), (3, 0.25), (4, 0.15), (5, 0.1), (6, 0.05))
STAY_ON_CHANNEL: Final = 0.55
ABANDON_ENDS_JOURNEY: Final = 0.5
REVIEW_SHARE: Final = 0.03
RELATIONSHIP_SURVEY_SHARE: Final = 0.02
NA_SHARE: Final = 0.04

# Rating scales: (scale_min, scale_max, na_code, lowest good answer), by channel.
STARS: Final = (1, 5, 0, 4)
TEN: Final = (0, 10, 99, 8)
CHANNEL_SCALES: Final[dict[str, tuple[int, int, int, int]]] = {
    "web": TEN, "email": TEN, "app": STARS, "phone": STARS, "chat": STARS,
    "store": STARS, "social": STARS,
}

COMMENTS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    # language: (good, bad)
    "en": (("Quick and friendly, thank you!", "Sorted in five minutes.",
            "Great help from the agent 👍",
            "Loved the new cafe\u0301 corner in the store."),  # NFD é, kept as sent
           ("I had to explain my problem three times.", "Still not fixed after two calls.",
            "Nobody answered the chat.", "Waited 40 minutes on hold — unacceptable.")),
    "is": (("Þjónustan var frábær", "Fljót og góð afgreiðsla, takk fyrir!",
            "Starfsmaðurinn leysti málið strax."),
           ("Þurfti að bíða í hálftíma í símanum.", "Reikningurinn var rangur og enginn svaraði.",
            "Mjög léleg þjónusta, því miður.")),
    "fa": (("خدمات عالی بود، ممنونم", "مشکلم خیلی سریع حل شد.",
            "کارشناس بسیار مودب و دقیق بود."),
           ("سه بار تماس گرفتم و هنوز مشکل حل نشده است.", "زمان انتظار خیلی طولانی بود.",
            "هیچ\u200cکس به ایمیل من جواب نداد.")),
    "el": (("Εξαιρετική εξυπηρέτηση, ευχαριστώ!", "Γρήγορη και φιλική βοήθεια."),
           ("Περίμενα πάνω από μία ώρα στο τηλέφωνο.", "Το πρόβλημα δεν λύθηκε ακόμα.")),
    "fi": (("Erittäin ystävällinen ja nopea palvelu.", "Kiitos, ongelma ratkesi heti!"),
           ("Jonotin puhelimessa yli puoli tuntia.", "Lasku oli väärin eikä kukaan vastannut.")),
    "ja": (("とても丁寧な対応でした。ありがとうございます！", "すぐに解決しました。"),
           ("三回も電話しましたが、まだ解決していません。", "チャットの返信が遅すぎます。")),
    "emoji": (("👍👍", "😊 thanks!", "🙏✨", "❤️", "👨\u200d👩\u200d👧 family plan works great"),
              ("😡", "👎👎👎", "🤦\u200d♀️ again?", "⏳⏳⏳")),
}
COMMENT_SHARE: Final = 0.15
REVIEW_COMMENT_SHARE: Final = 0.75


@dataclass(frozen=True, slots=True)
class Drop:
    """An injected fall in experience: ``points`` (0..100 scale) of good-answer probability.

    It applies to events whose fields equal every item of ``where`` (e.g.
    ``{"channel": "chat"}``), from ``after`` past the simulation start, for ``duration``
    (for good when None). Negative points inject a rise.
    """

    after: timedelta
    where: dict[str, str]
    points: float
    duration: timedelta | None = None

    def __post_init__(self) -> None:
        unknown = set(self.where) - DROP_FIELDS
        if unknown:
            raise ValueError(f"Drop.where: unknown field(s) {sorted(unknown)} "
                             f"(known: {', '.join(sorted(DROP_FIELDS))})")
        if self.after < timedelta(0):
            raise ValueError("Drop.after must not be negative")
        if self.duration is not None and self.duration <= timedelta(0):
            raise ValueError("Drop.duration must be positive")
        if not -100.0 <= self.points <= 100.0:
            raise ValueError("Drop.points must lie in -100..100")


@dataclass(frozen=True, slots=True)
class Customer:
    """One simulated customer; ``temper`` shifts their answers (points), for good."""

    customer_id: str
    segment: Segment
    offering: str
    persona: str
    temper: float
    language: str


@dataclass(slots=True)
class _Journey:
    journey_id: str
    customer: Customer
    journey_type: str
    stages: list[str]
    channels: list[str]
    nps_at_end: bool
    step: int = 0
    used: set[str] = field(default_factory=set)


def _pick(rng: random.Random, weighted: Iterable[tuple[str, float]]) -> str:
    """One name from (name, weight) pairs."""
    items = list(weighted)
    return rng.choices([k for k, _ in items], [w for _, w in items])[0]


def _stages(n: int) -> list[str]:
    """Stages of an ``n``-touchpoint journey: recognize → request → respond, in order."""
    if n == 1:
        return ["respond"]
    if n == 2:
        return ["request", "respond"]
    middle = n - 2
    requests = (middle + 1) // 2
    return ["recognize"] + ["request"] * requests + ["respond"] * (middle - requests + 1)


class Simulator:
    """Deterministic synthetic touchpoint events (JSON-ready dicts, like ``airline.events``).

    ``rate`` is events per second of event time; ``customers`` the population size;
    ``open_journeys`` how many journeys run at once (more: each journey's touchpoints
    lie further apart); ``drops`` the injected falls. Each ``events()`` call replays the
    same stream from the start.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        rate: float = 10.0,
        start: datetime = DEFAULT_START,
        customers: int = 1000,
        drops: Iterable[Drop] = (),
        open_journeys: int = 200,
        source_prefix: str = "sim",
    ) -> None:
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError("start must be a timezone-aware datetime")
        if rate <= 0:
            raise ValueError("rate must be positive")
        if customers < 1:
            raise ValueError("customers must be at least 1")
        if open_journeys < 1:
            raise ValueError("open_journeys must be at least 1")
        self.seed = seed
        self.rate = float(rate)
        self.start = start
        self.drops = tuple(drops)
        self.open_journeys = open_journeys
        self.source_prefix = source_prefix
        self.customers = self._population(customers)

    def _population(self, count: int) -> list[Customer]:
        rng = random.Random(f"{self.seed}:customers")  # noqa: S311 - simulation, not crypto
        seen: set[str] = set()
        out: list[Customer] = []
        segments = [(s.name, s.share) for s in SEGMENTS]
        by_name = {s.name: s for s in SEGMENTS}
        while len(out) < count:
            customer_id = f"cus-{rng.getrandbits(48):012x}"
            if customer_id in seen:
                continue
            seen.add(customer_id)
            segment = by_name[_pick(rng, segments)]
            out.append(Customer(
                customer_id=customer_id,
                segment=segment,
                offering=rng.choice(segment.offerings),
                persona=_pick(rng, PERSONA_SHARES),
                temper=rng.gauss(0.0, 6.0),
                language=_pick(rng, segment.languages),
            ))
        return out

    def events(self, n: int | None = None,
               duration: timedelta | None = None) -> Iterator[dict[str, Any]]:
        """Events in event-time order: the first ``n``, or those within ``duration``.

        With neither, the stream never ends. Event ids are UUIDs drawn from the seeded
        generator, so they are unique within a run and equal across runs of one seed.
        """
        rng = random.Random(f"{self.seed}:events")  # noqa: S311 - simulation, not crypto
        limit = None if duration is None else duration.total_seconds()
        offset = 0.0
        emitted = 0
        open_: list[_Journey] = []
        while n is None or emitted < n:
            offset += rng.expovariate(self.rate)
            if limit is not None and offset >= limit:
                return
            at = self.start + timedelta(seconds=offset)
            roll = rng.random()
            if roll < REVIEW_SHARE:
                event = self._review(rng, at, offset)
            elif roll < REVIEW_SHARE + RELATIONSHIP_SURVEY_SHARE:
                event = self._relationship_survey(rng, at, offset)
            else:
                if len(open_) < self.open_journeys:
                    journey = self._journey(rng)
                    open_.append(journey)
                    index = len(open_) - 1
                else:
                    index = rng.randrange(len(open_))
                    journey = open_[index]
                event = self._touchpoint(rng, journey, at, offset)
                if event.get("journey_end"):
                    open_[index] = open_[-1]
                    open_.pop()
            emitted += 1
            yield event

    # -- journeys --------------------------------------------------------------------

    def _journey(self, rng: random.Random) -> _Journey:
        customer = rng.choice(self.customers)
        length = _weighted_int(rng, JOURNEY_LENGTHS)
        weights = PERSONAS[customer.persona]
        channels = [_pick(rng, weights.items())]
        for _ in range(length - 1):
            if rng.random() < STAY_ON_CHANNEL:
                channels.append(channels[-1])
            else:
                channels.append(_pick(rng, ((c, w) for c, w in weights.items()
                                            if c != channels[-1])))
        return _Journey(
            journey_id=f"jrn-{rng.getrandbits(64):016x}",
            customer=customer,
            journey_type=rng.choice(JOURNEY_TYPES),
            stages=_stages(length),
            channels=channels,
            nps_at_end=rng.random() < END_NPS_SHARE,
        )

    def _touchpoint(self, rng: random.Random, journey: _Journey, at: datetime,
                    offset: float) -> dict[str, Any]:
        step = journey.step
        journey.step += 1
        channel = journey.channels[step]
        stage = journey.stages[step]
        journey.used.add(channel)
        last = journey.step == len(journey.stages)
        touchpoint, owner = JOURNEY_TOUCHPOINTS.get(
            (journey.journey_type, channel), CHANNEL_TOUCHPOINTS[channel])
        kind = "nps" if last and journey.nps_at_end else _pick(rng, STAGE_KINDS[stage])
        customer = journey.customer
        event = self._base(rng, customer, at, kind, channel)
        event.update({
            "journey_type": journey.journey_type,
            "journey_id": journey.journey_id,
            "stage": stage,
            "touchpoint": touchpoint,
            "channel": channel,
            "contact": "direct",
            "owner": owner,
            "program": "continuous",
            "kind": kind,
        })
        quality = (BASE_QUALITY + JOURNEY_EFFECT[journey.journey_type]
                   + CHANNEL_EFFECT[channel] - customer.segment.expectation + customer.temper
                   - CHANNEL_PENALTY * (len(journey.used) - 1))
        good = self._answer(rng, event, quality, offset)
        if kind == "outcome" and event["value"] == "abandoned" and not last \
                and rng.random() < ABANDON_ENDS_JOURNEY:
            last = True  # the customer gave up: the journey ends before a response
        if last:
            event["journey_end"] = True
            journey.step = len(journey.stages)
        self._comment(rng, event, customer, good, COMMENT_SHARE)
        return event

    def _review(self, rng: random.Random, at: datetime, offset: float) -> dict[str, Any]:
        customer = rng.choice(self.customers)
        kind = "rating" if rng.random() < 0.7 else "sentiment"
        event = self._base(rng, customer, at, kind, "social")
        touchpoint, owner = CHANNEL_TOUCHPOINTS["social"]
        event.update({"touchpoint": touchpoint, "channel": "social", "contact": "indirect",
                      "owner": owner, "program": "continuous", "kind": kind})
        quality = BASE_QUALITY - 12.0 - customer.segment.expectation + customer.temper
        good = self._answer(rng, event, quality, offset, allow_na=False)
        self._comment(rng, event, customer, good, REVIEW_COMMENT_SHARE)
        return event

    def _relationship_survey(self, rng: random.Random, at: datetime,
                             offset: float) -> dict[str, Any]:
        customer = rng.choice(self.customers)
        event = self._base(rng, customer, at, "nps", "email")
        event.update({"touchpoint": "relationship_survey", "channel": "email",
                      "contact": "direct", "owner": "customer_experience",
                      "program": "periodic", "source": f"{self.source_prefix}-nps-survey",
                      "kind": "nps"})
        quality = BASE_QUALITY - customer.segment.expectation + customer.temper
        good = self._answer(rng, event, quality, offset)
        self._comment(rng, event, customer, good, COMMENT_SHARE)
        return event

    def _base(self, rng: random.Random, customer: Customer, at: datetime, kind: str,
              channel: str) -> dict[str, Any]:
        if kind == "outcome":
            source = "crm"
        elif kind == "sentiment":
            source = "speech-analytics" if channel == "phone" else "text-analytics"
        else:
            source = SURVEY_SOURCES[channel]
        return {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "source": f"{self.source_prefix}-{source}",
            "occurred_at": at.isoformat(timespec="milliseconds"),
            "customer_id": customer.customer_id,
            "segment": customer.segment.name,
            "offering": customer.offering,
        }

    # -- answers ---------------------------------------------------------------------

    def _drop_points(self, event: dict[str, Any], offset: float) -> float:
        points = 0.0
        for drop in self.drops:
            begin = drop.after.total_seconds()
            if offset < begin:
                continue
            if drop.duration is not None and offset >= begin + drop.duration.total_seconds():
                continue
            if all(event.get(k) == v for k, v in drop.where.items()):
                points += drop.points
        return points

    def _answer(self, rng: random.Random, event: dict[str, Any], quality: float,
                offset: float, allow_na: bool = True) -> bool:
        """Set ``value`` (and a rating's scale); True when the answer is a good one."""
        if self.drops:
            quality -= self._drop_points(event, offset)
        p = min(max(quality, 1.0), 99.0) / 100.0
        good = rng.random() < p
        kind = event["kind"]
        value: int | float | str
        if kind == "csat":
            value = (5 if rng.random() < 0.55 else 4) if good else _weighted_int(
                rng, ((3, 0.5), (2, 0.3), (1, 0.2)))
        elif kind == "nps":
            if good:
                value = 10 if rng.random() < 0.45 else 9
            elif rng.random() < 0.4:
                value = rng.choice((7, 8))
            else:
                value = _weighted_int(rng, ((6, 0.3), (5, 0.25), (4, 0.15), (3, 0.1),
                                            (2, 0.08), (1, 0.06), (0, 0.06)))
        elif kind == "ces":
            value = rng.choice((5, 6, 7)) if good else rng.choice((1, 2, 3, 4))
        elif kind == "rating":
            lo, hi, na, good_from = CHANNEL_SCALES[event.get("channel", "web")]
            event["scale_min"], event["scale_max"], event["na_code"] = lo, hi, na
            if allow_na and rng.random() < NA_SHARE:
                value = na
            else:
                value = rng.randint(good_from, hi) if good else rng.randint(lo, good_from - 1)
        elif kind == "outcome":
            if good:
                value = "resolved"
            else:
                abandon = 0.6 if event.get("stage") == "request" else 0.3
                value = "abandoned" if rng.random() < abandon else "unresolved"
        else:  # sentiment
            value = round(rng.uniform(0.05, 1.0) if good else rng.uniform(-1.0, 0.0), 3)
        event["value"] = value
        return good

    def _comment(self, rng: random.Random, event: dict[str, Any], customer: Customer,
                 good: bool, share: float) -> None:
        if rng.random() >= share:
            return
        language = customer.language if rng.random() < 0.85 else rng.choice(tuple(COMMENTS))
        good_texts, bad_texts = COMMENTS[language]
        event["comment"] = rng.choice(good_texts if good else bad_texts)


def _weighted_int(rng: random.Random, weighted: tuple[tuple[int, float], ...]) -> int:
    return rng.choices([k for k, _ in weighted], [w for _, w in weighted])[0]


def _utc_now() -> datetime:
    return datetime.now(UTC)


async def paced(
    events: Iterable[dict[str, Any]],
    rate: float,
    *,
    clock: Callable[[], datetime] = _utc_now,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    max_lag: float = 1.0,
) -> AsyncIterator[dict[str, Any]]:
    """Emit ``events`` in real time at ``rate`` per second, stamped with the clock's now.

    For live demos: the event time becomes the wall-clock time of emission, so the
    receiver's "not in the future" check always holds. When the consumer falls more
    than ``max_lag`` seconds behind the schedule, the schedule restarts from now
    instead of bursting to catch up. ``clock`` and ``sleep`` are injectable for tests.
    """
    if rate <= 0:
        raise ValueError("rate must be positive")
    interval = 1.0 / rate
    origin: datetime | None = None
    due = 0.0
    for event in events:
        now = clock()
        if now.tzinfo is None:
            raise ValueError("clock() must return a timezone-aware datetime")
        if origin is None:
            origin = now
        wait = due - (now - origin).total_seconds()
        if wait > 0:
            await sleep(wait)
            now = clock()
        elif -wait > max_lag:
            log.debug("paced: %.2f s behind schedule; restarting the schedule", -wait)
            origin, due = now, 0.0
        due += interval
        yield {**event, "occurred_at": now.isoformat(timespec="milliseconds")}
