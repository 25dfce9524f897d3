"""A simulated subscription store for `hub demo`: pure and seeded, no I/O.

`simulate()` yields what happens in the store, in time order, as Happenings: sign-ups,
renewals, failed payments and their retries, plan changes, cancellations, consent changes,
usage. What each one looks like as a platform's webhook is the business of
payloads.py beside this module; the store names no platform.

The numbers are those of a small, healthy coffee subscription: about 9 % of renewals fail
at first, about half of those are recovered by a retry, a few percent of customers change
plan or cancel each month, and some who left come back.
"""
from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta, timezone

# What can happen (Happening.kind).
SIGNUP = "signup"
TRIAL_ENDING = "trial_ending"
RENEWAL = "renewal"
PAYMENT_FAILED = "payment_failed"
PAYMENT_RECOVERED = "payment_recovered"
PLAN_CHANGED = "plan_changed"
CANCEL_REQUESTED = "cancel_requested"
CANCELED = "canceled"
CONSENT_CHANGED = "consent_changed"
USAGE = "usage"


@dataclass(frozen=True)
class Plan:
    code: str
    name: str
    amount: int  # minor units per interval
    interval: str = "month"
    interval_count: int = 1


CURRENCY = "USD"
PLANS = (
    Plan("starter", "Starter Bag", 1800),
    Plan("double", "Double Bag", 3200),
    Plan("roaster", "Roaster's Choice", 5400),
    Plan("yearly", "Yearly Club", 19000, "year"),
)
_PLAN_WEIGHTS = (45, 30, 15, 10)


@dataclass(frozen=True)
class Rates:
    """The store's behaviour, as probabilities (per renewal unless said otherwise)."""

    trial: float = 0.3  # of sign-ups on a platform that offers trials
    trial_days: int = 14
    first_payment_fails: float = 0.09
    retry_recovers: float = 0.5
    retry_days: tuple = (3, 5, 7)  # after the first failure, then after each failed retry
    plan_change: float = 0.08
    cancel: float = 0.06
    comes_back: float = 0.2  # of those whose subscription ended
    consent_given: float = 0.7  # at sign-up; the others mostly decline, a few are never asked
    consent_declined: float = 0.22
    consent_change: float = 0.15  # over a customer's life
    usage_weekly: float = 0.25  # a usage report in a given week


@dataclass
class Customer:
    """One customer and their current subscription, as the store knows them."""

    number: int
    platform: str
    first_name: str
    last_name: str
    email: str
    phone: str | None
    joined_at: datetime
    plan: Plan
    subscription: int = 1  # the customer's n-th subscription (a come-back starts a new one)
    status: str = "active"  # trialing, active, past_due, canceled
    period_start: datetime | None = None
    period_end: datetime | None = None
    trial_end: datetime | None = None
    cancel_at_period_end: bool = False
    canceled_at: datetime | None = None
    failures: int = 0  # failed attempts of the payment now being retried
    renewals: int = 0
    orders: int = 0
    consent: str | None = None  # subscribed, unsubscribed, or None (never asked)
    consent_at: datetime | None = None
    card_last4: str = "4242"

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"


@dataclass(frozen=True)
class Happening:
    """Something that happened in the store at `at`; `customer` is their state just after it."""

    at: datetime
    kind: str
    customer: Customer
    detail: dict = field(default_factory=dict)


FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret",
               "Tim", "Radia", "Dennis", "Hedy", "John", "Katherine", "Linus", "Mary", "Niklaus",
               "Sophie", "Guido", "Anita", "Bjarne", "Carol", "Dorothy", "Evelyn", "Fernando",
               "Hamid", "Ines", "Jun", "Keiko", "Lars", "Maya", "Nadia", "Omar", "Priya", "Rosa")
LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
              "Hamilton", "Berners-Lee", "Perlman", "Ritchie", "Lamarr", "Backus", "Johnson",
              "Torvalds", "Keller", "Wirth", "Wilson", "van Rossum", "Borg", "Stroustrup", "Shaw",
              "Vaughan", "Boyd", "Corbato", "Khan", "Garcia", "Tanaka", "Sato", "Nilsen", "Patel")
DECLINES = ("insufficient_funds", "card_declined", "expired_card", "do_not_honor")


def day_start(day: datetime) -> datetime:
    return datetime.combine(day.date(), time(0), tzinfo=timezone.utc)


def add_interval(at: datetime, plan: Plan) -> datetime:
    """`at` plus one billing interval (months keep the day of month, capped at 28)."""
    months = plan.interval_count * (12 if plan.interval == "year" else 1)
    month = at.month - 1 + months
    return at.replace(year=at.year + month // 12, month=month % 12 + 1, day=min(at.day, 28))


class _Store:
    def __init__(self, rng: random.Random, start: datetime, end: datetime, rates: Rates,
                 trial_platforms: frozenset):
        self.rng, self.start, self.end, self.rates = rng, start, end, rates
        self.trial_platforms = trial_platforms
        self.customers: dict[int, Customer] = {}
        self.queue: list = []
        self.seq = 0

    def at(self, when: datetime, action: str, number: int, **detail) -> None:
        if when < self.end:
            self.seq += 1
            heapq.heappush(self.queue, (when, self.seq, action, number, detail))

    def daytime(self, day: datetime) -> datetime:
        """A waking hour on `day` (customers act between 07:00 and 22:00 UTC)."""
        return day_start(day) + timedelta(seconds=self.rng.randrange(7 * 3600, 22 * 3600))

    def later(self, after: datetime, low_days: int, high_days: int) -> datetime:
        return self.daytime(after + timedelta(days=self.rng.randint(low_days, high_days)))

    def happened(self, at, kind, c: Customer, **detail) -> Happening:
        return Happening(at, kind, replace(c), detail)

    # Actions: each returns the happenings it makes and schedules what follows ----------------

    def signup(self, at, c: Customer, detail) -> list[Happening]:
        r = self.rng
        c.status, c.failures, c.cancel_at_period_end, c.canceled_at = "active", 0, False, None
        if c.subscription == 1:
            roll = r.random()
            c.consent = ("subscribed" if roll < self.rates.consent_given else
                         "unsubscribed" if roll < self.rates.consent_given + self.rates.consent_declined
                         else None)
            c.consent_at = at if c.consent else None
            if r.random() < self.rates.consent_change:
                self.at(self.later(at, 5, 150), "consent", c.number)
            self.at(self.later(at, 1, 7), "usage", c.number)
        c.period_start = at
        if c.platform in self.trial_platforms and r.random() < self.rates.trial:
            c.status, c.trial_end = "trialing", at + timedelta(days=self.rates.trial_days)
            c.period_end = c.trial_end
            self.at(c.trial_end - timedelta(days=3), "trial_ending", c.number)
        else:
            c.trial_end = None
            c.period_end = add_interval(at, c.plan)
            c.orders += 1
        self.at(c.period_end, "renew", c.number)
        self._maybe_change(at, c)
        return [self.happened(at, SIGNUP, c, returning=c.subscription > 1)]

    def _maybe_change(self, now: datetime, c: Customer) -> None:
        """Before the period's end: maybe a plan change, maybe a cancellation."""
        r, span = self.rng, (c.period_end - now).days
        if span > 2 and r.random() < self.rates.plan_change:
            self.at(self.daytime(now + timedelta(days=r.randint(1, span - 1))), "change", c.number)
        if span > 2 and r.random() < self.rates.cancel:
            self.at(self.daytime(now + timedelta(days=r.randint(1, span - 1))), "cancel", c.number)

    def trial_ending(self, at, c, detail):
        if c.status != "trialing":
            return []
        return [self.happened(at, TRIAL_ENDING, c)]

    def renew(self, at, c: Customer, detail) -> list[Happening]:
        if c.status == "canceled" or at != c.period_end:
            return []  # ended, or the period moved since this was scheduled
        if c.cancel_at_period_end:
            return self._end(at, c, "requested")
        if self.rng.random() < self.rates.first_payment_fails:
            c.status, c.failures = "past_due", 1
            self.at(at + timedelta(days=self.rates.retry_days[0]), "retry", c.number)
            return [self.happened(at, PAYMENT_FAILED, c, attempt=1, decline=self.rng.choice(DECLINES))]
        return [self._paid(at, c, RENEWAL)]

    def _paid(self, at, c: Customer, kind: str) -> Happening:
        was = c.status
        c.status, c.failures, c.trial_end = "active", 0, None
        c.period_start, c.period_end = c.period_end, add_interval(c.period_end, c.plan)
        c.renewals += 1
        c.orders += 1
        self.at(c.period_end, "renew", c.number)
        self._maybe_change(at, c)
        return self.happened(at, kind, c, was=was)

    def retry(self, at, c: Customer, detail) -> list[Happening]:
        if c.status != "past_due":
            return []
        if self.rng.random() < self.rates.retry_recovers:
            # The paid invoice is the one that failed: the period it opens starts then.
            return [self._paid(at, c, PAYMENT_RECOVERED)]
        c.failures += 1
        if c.failures > len(self.rates.retry_days):
            return self._end(at, c, "payment_failed")
        self.at(at + timedelta(days=self.rates.retry_days[c.failures - 1]), "retry", c.number)
        return [self.happened(at, PAYMENT_FAILED, c, attempt=c.failures, decline=self.rng.choice(DECLINES))]

    def _end(self, at, c: Customer, reason: str) -> list[Happening]:
        c.status, c.canceled_at, c.cancel_at_period_end = "canceled", at, False
        if self.rng.random() < self.rates.comes_back:
            self.at(self.later(at, 20, 60), "return", c.number)
        return [self.happened(at, CANCELED, c, reason=reason)]

    def change(self, at, c: Customer, detail) -> list[Happening]:
        if c.status not in ("active", "trialing") or c.cancel_at_period_end:
            return []
        old = c.plan
        c.plan = self.rng.choice([p for p in PLANS if p.code != old.code and p.interval == old.interval]
                                 or [old])
        if c.plan == old:
            return []
        return [self.happened(at, PLAN_CHANGED, c, previous=old)]

    def cancel(self, at, c: Customer, detail) -> list[Happening]:
        if c.status not in ("active", "trialing") or c.cancel_at_period_end:
            return []
        c.cancel_at_period_end = True
        return [self.happened(at, CANCEL_REQUESTED, c)]

    def consent(self, at, c: Customer, detail) -> list[Happening]:
        c.consent = "unsubscribed" if c.consent == "subscribed" else "subscribed"
        c.consent_at = at
        return [self.happened(at, CONSENT_CHANGED, c)]

    def usage(self, at, c: Customer, detail) -> list[Happening]:
        self.at(self.later(at, 6, 8), "usage", c.number)
        if c.status not in ("active", "trialing", "past_due") or self.rng.random() > self.rates.usage_weekly:
            return []
        # Cups brewed this week: more on the bigger plans.
        cups = self.rng.randint(5, 14) * (1 + PLANS.index(c.plan) // 2)
        return [self.happened(at, USAGE, c, quantity=cups, metric="cups brewed")]

    def come_back(self, at, c: Customer, detail) -> list[Happening]:
        if c.status != "canceled":
            return []
        c.subscription += 1
        c.plan = self.rng.choices(PLANS, _PLAN_WEIGHTS)[0]
        return self.signup(at, c, detail)


def _customer(rng: random.Random, number: int, platform: str, joined: datetime) -> Customer:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    handle = f"{first}.{last}".lower().replace(" ", "").replace("-", "")
    domain = rng.choice(("example.com", "example.org", "example.net"))
    phone = f"+1613555{rng.randrange(10_000):04d}" if rng.random() < 0.4 else None
    return Customer(number=number, platform=platform, first_name=first, last_name=last,
                    email=f"{handle}.{number}@{domain}", phone=phone, joined_at=joined,
                    plan=rng.choices(PLANS, _PLAN_WEIGHTS)[0],
                    card_last4=f"{rng.randrange(10_000):04d}")


def simulate(subscribers: int, start: datetime, days: int, platforms: tuple[str, ...], seed: int = 1,
             trial_platforms: frozenset = frozenset(), rates: Rates | None = None) -> Iterator[Happening]:
    """Everything that happens in the store from `start` for `days` days, in time order.

    `subscribers` customers join over the period (a third in its first weeks, as when a
    store opens its subscriptions), each on one of `platforms`; the same seed gives the
    same story.
    """
    rng = random.Random(seed)
    start = day_start(start)
    store = _Store(rng, start, start + timedelta(days=days), rates or Rates(), frozenset(trial_platforms))
    early = max(1, min(days, 21))
    for number in range(1, subscribers + 1):
        offset = rng.randrange(early) if rng.random() < 1 / 3 else rng.randrange(days)
        joined = store.daytime(start + timedelta(days=offset))
        store.customers[number] = _customer(rng, number, platforms[number % len(platforms)], joined)
        store.at(joined, "signup", number)
    actions = {"signup": store.signup, "trial_ending": store.trial_ending, "renew": store.renew,
               "retry": store.retry, "change": store.change, "cancel": store.cancel,
               "consent": store.consent, "usage": store.usage, "return": store.come_back}
    while store.queue:
        when, _, action, number, detail = heapq.heappop(store.queue)
        yield from actions[action](when, store.customers[number], detail)
