"""Offers scenario: a seeded simulator of a telecom operator's broadband offers and who takes them.

Every row is one offer made to a customer: who the customer is (``segment``, main ``device``,
``tenure_months``, ``monthly_usage_gb``), how and when the offer reached them (``channel``,
``hour``), what was offered (``offer_category``, ``price_band``), and whether they took it
(``accepted``: ``"yes"``/``"no"``). Acceptance is a logistic function of all of these with their
interactions — students take mobile bundles, families TV add-ons, heavy users speed upgrades,
price hurts students and seniors more than professionals and businesses, an agent on the phone
or in a shop sells better than an e-mail — so that about one offer in six is accepted.

The scripted timeline (days from ``start``; by default 2026-08-10, 120 days of 1,000 offers):

* days 0–7: business as usual;
* days 7–35, back to school: students take speed upgrades and mobile bundles far more often,
  families security add-ons (parental controls), and the campaign engine targets students twice
  as often;
* days 56–77, a competitor's campaign: families, professionals and small businesses stop
  accepting high and premium price bands (their acceptance collapses to a fraction), while the
  operator keeps offering them;
* day 84, a new product: ``fibre_2g`` is offered from this day, its share of offers growing to
  about a sixth over ten days; professionals, businesses and heavy users take it, seniors do not,
  and its novelty wears off over a few weeks. It cannibalises ``speed_upgrade``, which heavy users
  now turn down and which the operator offers less;
* days 100–120, holidays: families and seniors take TV add-ons, everyone takes mobile bundles
  as presents, more offers go out by e-mail, and the mix of offers shifts towards TV.

Offers are spread over the day as people use each channel (shops and call centres keep office
hours, apps peak in the evening, e-mails go out in the morning); ``hour`` is the hour of
``time``, in UTC, the operator's clock.

Examples
--------
>>> frame = OffersSimulator(OffersScenarioConfig(days=2, offers_per_day=50, seed=1)).frame()
>>> frame.shape, list(frame.columns[:3])
((100, 11), ['time', 'customer_id', 'segment'])
>>> print(frame.head(2).T.to_string())
                                          0                          1
time              2026-08-10T06:52:17+00:00  2026-08-10T07:35:07+00:00
customer_id                         c-36789                    c-18840
segment                              family                    student
device                                  ios                        ios
tenure_months                            17                          5
monthly_usage_gb                      282.9                      451.4
channel                               email                      email
hour                                      6                          7
offer_category                speed_upgrade                   tv_addon
price_band                              mid                        low
accepted                                 no                        yes
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

SEGMENTS: tuple[str, ...] = ("student", "family", "professional", "senior", "smb")
DEVICES: tuple[str, ...] = ("android", "ios", "web", "stb")
CHANNELS: tuple[str, ...] = ("app", "web", "call_centre", "store", "email")
OFFER_CATEGORIES: tuple[str, ...] = ("speed_upgrade", "mobile_bundle", "tv_addon", "security_addon", "fibre_2g")
NEW_CATEGORY = "fibre_2g"
PRICE_BANDS: tuple[str, ...] = ("low", "mid", "high", "premium")
TARGET = "accepted"
CLASSES: tuple[str, ...] = ("no", "yes")
FEATURES: tuple[tuple[str, str], ...] = (
    ("segment", "category"),
    ("device", "category"),
    ("tenure_months", "number"),
    ("monthly_usage_gb", "number"),
    ("channel", "category"),
    ("hour", "number"),
    ("offer_category", "category"),
    ("price_band", "category"),
)
COLUMNS: tuple[str, ...] = ("time", "customer_id", *(name for name, _ in FEATURES), TARGET)

_STUDENT, _FAMILY, _PROFESSIONAL, _SENIOR, _SMB = range(5)
_ANDROID, _IOS, _WEB, _STB = range(4)
_APP, _WEB_CHANNEL, _CALL, _STORE, _EMAIL = range(5)
_SPEED, _MOBILE, _TV, _SECURITY, _FIBRE = range(5)
_LOW, _MID, _HIGH, _PREMIUM = range(4)

# Customers: share of each segment, main device, tenure and usage.
_SEGMENT_SHARE = np.array([0.14, 0.34, 0.24, 0.16, 0.12])
_DEVICE_BY_SEGMENT = np.array(
    [
        [0.55, 0.35, 0.08, 0.02],
        [0.40, 0.30, 0.10, 0.20],
        [0.30, 0.50, 0.15, 0.05],
        [0.25, 0.15, 0.25, 0.35],
        [0.30, 0.30, 0.35, 0.05],
    ]
)
_TENURE_MEAN_MONTHS = np.array([10.0, 42.0, 30.0, 70.0, 36.0])
_USAGE_MEDIAN_GB = np.array([350.0, 480.0, 300.0, 90.0, 260.0])
_MAX_TENURE_MONTHS = 300.0  # the gamma's tail would otherwise reach half a century
_MAX_USAGE_GB = 3000.0

# Campaign engine: whom it targets, through which channel, with what.
_CHANNEL_BY_SEGMENT = np.array(
    [
        [0.45, 0.25, 0.05, 0.05, 0.20],
        [0.30, 0.25, 0.12, 0.13, 0.20],
        [0.35, 0.30, 0.05, 0.05, 0.25],
        [0.10, 0.15, 0.30, 0.25, 0.20],
        [0.20, 0.30, 0.20, 0.10, 0.20],
    ]
)
_CATEGORY_BY_SEGMENT = np.array(
    [
        [0.35, 0.40, 0.10, 0.15, 0.0],
        [0.25, 0.25, 0.30, 0.20, 0.0],
        [0.40, 0.25, 0.15, 0.20, 0.0],
        [0.15, 0.15, 0.40, 0.30, 0.0],
        [0.40, 0.20, 0.05, 0.35, 0.0],
    ]
)
_PRICE_BY_CATEGORY = np.array(
    [
        [0.20, 0.40, 0.30, 0.10],
        [0.30, 0.40, 0.20, 0.10],
        [0.25, 0.35, 0.25, 0.15],
        [0.50, 0.35, 0.10, 0.05],
        [0.00, 0.10, 0.45, 0.45],
    ]
)


def _hours(*weights: tuple[range, float]) -> np.ndarray:
    """A distribution over the 24 hours from (hours, weight) pieces."""
    out = np.full(24, 0.05)
    for hours, weight in weights:
        out[list(hours)] = weight
    return out / out.sum()


_HOUR_BY_CHANNEL = np.stack(
    [
        _hours((range(7, 18), 1.0), (range(18, 23), 2.5), (range(23, 24), 0.8)),
        _hours((range(8, 18), 1.0), (range(18, 23), 1.8)),
        _hours((range(0, 8), 0.0), (range(8, 20), 1.0), (range(20, 24), 0.0)),
        _hours((range(0, 9), 0.0), (range(9, 19), 1.0), (range(19, 24), 0.0)),
        _hours((range(6, 10), 3.0), (range(10, 17), 0.4), (range(17, 19), 1.5)),
    ]
)

# Acceptance: the logit's pieces.
_BASE_LOGIT = -2.35
_SEGMENT_CATEGORY = np.array(
    [
        [0.40, 0.80, -0.40, -0.60, 0.30],
        [0.00, 0.20, 0.70, 0.30, 0.60],
        [0.60, 0.10, -0.20, 0.10, 1.20],
        [-0.60, -0.40, 0.50, 0.60, -1.20],
        [0.50, -0.20, -0.90, 0.80, 1.00],
    ]
)
_PRICE_LOGIT = np.array([0.55, 0.0, -0.55, -1.10])
_PRICE_SENSITIVITY = np.array([1.5, 1.0, 0.5, 1.4, 0.6])
_CHANNEL_LOGIT = np.array([0.30, 0.0, 0.60, 0.80, -0.60])

# The timeline's strengths.
_SCHOOL_SEGMENT_CATEGORY = {(_STUDENT, _SPEED): 0.9, (_STUDENT, _MOBILE): 1.1, (_FAMILY, _SECURITY): 0.7}
_COMPETITOR_SEGMENTS = (_FAMILY, _PROFESSIONAL, _SMB)
_COMPETITOR_PRICE = {_HIGH: -2.0, _PREMIUM: -2.6}
_HOLIDAY_SEGMENT_CATEGORY = {(_FAMILY, _TV): 1.0, (_SENIOR, _TV): 0.8}
_HOLIDAY_MOBILE = 0.6
_LAUNCH_RAMP_DAYS = 10.0
_LAUNCH_SHARE = 0.2
_NOVELTY = 0.6
_NOVELTY_DAYS = 20.0
_RAMP_DAYS = 3.0  # seasons fade in and out over this many days


@dataclass(frozen=True)
class OffersScenarioConfig:
    """Knobs of the offers scenario; the defaults are the scripted 120-day timeline.

    Every day holds exactly ``offers_per_day`` offers, so the stream has
    ``days × offers_per_day`` rows. A phase set to ``None`` does not happen.
    """

    days: int = 120
    offers_per_day: int = 1000
    n_customers: int = 40_000
    seed: int = 11
    start: datetime = datetime(2026, 8, 10, tzinfo=UTC)
    back_to_school: tuple[float, float] | None = (7.0, 35.0)
    competitor_campaign: tuple[float, float] | None = (56.0, 77.0)
    launch_day: float | None = 84.0
    holidays: tuple[float, float] | None = (100.0, 120.0)

    def __post_init__(self) -> None:
        if self.days < 1:
            raise ValueError(f"days must be at least 1, got {self.days}")
        if self.offers_per_day < 1:
            raise ValueError(f"offers_per_day must be at least 1, got {self.offers_per_day}")
        if self.n_customers < 1:
            raise ValueError(f"n_customers must be at least 1, got {self.n_customers}")
        if self.start.tzinfo is None:
            raise ValueError(f"start must be timezone-aware (UTC), got {self.start.isoformat()}")

    @property
    def n_rows(self) -> int:
        return self.days * self.offers_per_day


class OffersSimulator:
    """Seeded offers stream; :meth:`frame` returns it, one row per offer, in time order.

    Parameters
    ----------
    config
        The scenario's knobs. Two simulators with the same config return identical frames.
    """

    def __init__(self, config: OffersScenarioConfig | None = None) -> None:
        self.config = config or OffersScenarioConfig()

    def frame(self) -> pd.DataFrame:
        """All offers with their outcome: the columns of :data:`COLUMNS`, ``time`` as ISO-8601 UTC."""
        c = self.config
        rng = np.random.default_rng(c.seed)
        customers = self._customers(rng)
        days = [self._day(d, customers, rng) for d in range(c.days)]
        offers = {key: np.concatenate([day[key] for day in days]) for key in days[0]}

        seconds = offers["second"]
        times = pd.Timestamp(c.start) + pd.to_timedelta(seconds, unit="s")
        who = offers["customer"]
        return pd.DataFrame(
            {
                "time": times.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
                "customer_id": np.char.add("c-", np.char.zfill(who.astype(str), 5)),
                "segment": np.array(SEGMENTS)[customers["segment"][who]],
                "device": np.array(DEVICES)[customers["device"][who]],
                "tenure_months": offers["tenure"],
                "monthly_usage_gb": offers["usage"],
                "channel": np.array(CHANNELS)[offers["channel"]],
                "hour": offers["hour"],
                "offer_category": np.array(OFFER_CATEGORIES)[offers["category"]],
                "price_band": np.array(PRICE_BANDS)[offers["price"]],
                TARGET: np.where(offers["accepted"], "yes", "no"),
            }
        )

    # -- the customer base -------------------------------------------------------------
    def _customers(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        n = self.config.n_customers
        segment = rng.choice(len(SEGMENTS), n, p=_SEGMENT_SHARE)
        device = _choose_rows(rng, _DEVICE_BY_SEGMENT[segment])
        tenure = np.minimum(rng.gamma(1.5, _TENURE_MEAN_MONTHS[segment] / 1.5), _MAX_TENURE_MONTHS)
        usage = _USAGE_MEDIAN_GB[segment] * rng.lognormal(0.0, 0.6, n)
        return {"segment": segment, "device": device, "tenure": tenure, "usage": usage}

    # -- one day of offers -------------------------------------------------------------
    def _day(self, day: int, customers: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        n = c.offers_per_day
        school = _phase(c.back_to_school, day + 0.5)
        competitor = _phase(c.competitor_campaign, day + 0.5, ramp=1.0)
        holidays = _phase(c.holidays, day + 0.5)
        since_launch = (day + 0.5 - c.launch_day) if c.launch_day is not None else -1.0
        launched = min(max(since_launch / _LAUNCH_RAMP_DAYS, 0.0), 1.0) if since_launch >= 0 else 0.0

        # Whom the campaign engine targets today (among the segments the base has).
        targeting = _SEGMENT_SHARE * np.array([1.0 + school, 1.0, 1.0, 1.0 + 0.5 * holidays, 1.0])
        targeting *= np.bincount(customers["segment"], minlength=len(SEGMENTS)) > 0
        segment_today = rng.choice(len(SEGMENTS), n, p=targeting / targeting.sum())
        customer = np.empty(n, dtype=int)
        for s in range(len(SEGMENTS)):
            chosen = segment_today == s
            if chosen.any():
                customer[chosen] = rng.choice(np.flatnonzero(customers["segment"] == s), int(chosen.sum()))
        segment = customers["segment"][customer]
        device = customers["device"][customer]

        # How and when: an app offer needs a phone; holidays send more e-mails.
        channel_p = _CHANNEL_BY_SEGMENT[segment].copy()
        channel_p[:, _EMAIL] *= 1.0 + 1.0 * holidays
        channel = _choose_rows(rng, channel_p / channel_p.sum(axis=1, keepdims=True))
        channel = np.where((channel == _APP) & (device >= _WEB), _WEB_CHANNEL, channel)
        hour = _choose_rows(rng, _HOUR_BY_CHANNEL[channel])
        second = day * 86_400 + hour * 3600 + rng.integers(0, 3600, n)

        # What: the new product takes its share mostly from speed upgrades.
        category_p = _CATEGORY_BY_SEGMENT[segment].copy()
        category_p[:, _TV] *= 1.0 + 0.8 * holidays
        category_p[:, _FIBRE] = _LAUNCH_SHARE * launched
        category_p[:, _SPEED] *= 1.0 - 0.6 * launched
        category = _choose_rows(rng, category_p / category_p.sum(axis=1, keepdims=True))
        price = _choose_rows(rng, _PRICE_BY_CATEGORY[category])

        tenure = np.floor(customers["tenure"][customer] + day / 30.4).astype(int)
        seasonal_usage = 1.0 + 0.15 * holidays + 0.2 * school * (segment == _STUDENT)
        usage = customers["usage"][customer] * seasonal_usage * rng.lognormal(0.0, 0.15, n)
        usage = np.round(np.minimum(usage, _MAX_USAGE_GB), 1)

        logit = (
            _BASE_LOGIT
            + _SEGMENT_CATEGORY[segment, category]
            + _PRICE_LOGIT[price] * _PRICE_SENSITIVITY[segment]
            + _CHANNEL_LOGIT[channel]
            + _usage_logit(category, usage)
            + _tenure_logit(category, tenure)
            + _hour_logit(channel, hour)
            + _device_logit(device, category)
        )
        for (s, k), lift in _SCHOOL_SEGMENT_CATEGORY.items():
            logit += school * lift * ((segment == s) & (category == k))
        targeted = np.isin(segment, _COMPETITOR_SEGMENTS)
        for p, drop in _COMPETITOR_PRICE.items():
            logit += competitor * drop * (targeted & (price == p))
        for (s, k), lift in _HOLIDAY_SEGMENT_CATEGORY.items():
            logit += holidays * lift * ((segment == s) & (category == k))
        logit += holidays * _HOLIDAY_MOBILE * (category == _MOBILE)
        if since_launch >= 0:
            novelty = _NOVELTY * np.exp(-since_launch / _NOVELTY_DAYS)
            logit += novelty * (category == _FIBRE)
            # Heavy users who would have upgraded their speed now want the new fibre.
            logit -= launched * (0.4 + 0.8 * (usage > 400)) * (category == _SPEED)
        accepted = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))

        order = np.argsort(second, kind="stable")
        fields = {
            "second": second,
            "customer": customer,
            "tenure": tenure,
            "usage": usage,
            "channel": channel,
            "hour": hour,
            "category": category,
            "price": price,
            "accepted": accepted,
        }
        return {key: value[order] for key, value in fields.items()}


def _choose_rows(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """One seeded draw per row of ``p``, each row a distribution over the columns."""
    cumulative = np.cumsum(p, axis=1)
    draws = rng.random((p.shape[0], 1)) * cumulative[:, -1:]
    return np.minimum((draws >= cumulative).sum(axis=1), p.shape[1] - 1)


def _phase(window: tuple[float, float] | None, day: float, ramp: float = _RAMP_DAYS) -> float:
    """How much of a seasonal phase is in force on ``day``: 0 outside, 1 inside, ramps between."""
    if window is None:
        return 0.0
    start, end = window
    rise = (day - start) / ramp
    fall = (end - day) / ramp
    return float(np.clip(min(rise, fall), 0.0, 1.0))


def _usage_logit(category: np.ndarray, usage: np.ndarray) -> np.ndarray:
    heavy = np.log(np.maximum(usage, 1.0) / 300.0)
    weight = np.select([category == _SPEED, category == _FIBRE, category == _TV], [0.8, 1.1, 0.2], 0.0)
    return weight * heavy


def _tenure_logit(category: np.ndarray, tenure: np.ndarray) -> np.ndarray:
    # New customers still shop around for bundles; long-standing ones buy peace of mind.
    new = (tenure < 6) & (category == _MOBILE)
    loyal = (tenure > 60) & (category == _SECURITY)
    return 0.4 * new + 0.3 * loyal - 0.004 * np.minimum(tenure, 120)


def _hour_logit(channel: np.ndarray, hour: np.ndarray) -> np.ndarray:
    evening = (hour >= 19) & (hour <= 22) & ((channel == _APP) | (channel == _WEB_CHANNEL))
    night = hour <= 5
    return 0.25 * evening - 0.4 * night


def _device_logit(device: np.ndarray, category: np.ndarray) -> np.ndarray:
    return (
        0.6 * ((device == _STB) & (category == _TV))
        + 0.3 * ((device == _IOS) & (category == _MOBILE))
        + 0.3 * ((device == _ANDROID) & (category == _SECURITY))
    )


def acceptance_rate(frame: pd.DataFrame) -> float:
    """Share of offers accepted in ``frame``.

    >>> acceptance_rate(pd.DataFrame({"accepted": ["yes", "no", "no", "no"]}))
    0.25
    """
    return float((frame[TARGET] == "yes").mean()) if len(frame) else 0.0
