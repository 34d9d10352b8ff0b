"""ONT scenario: a seeded simulator of optical modems (ONTs) on home gateways.

Each ONT reports its optical and system telemetry every ``interval_minutes`` (TR-069/TR-181
``Device.Optical.Interface.{i}.Stats`` and vendor extensions, as a relay would forward it over
MQTT). The label of a reading says whether the ONT goes offline within the next hour, and why:
``online``, ``fibre``, ``power``, ``overheating``, ``firmware_crash`` or ``upstream_outage``.

The physics follows the ranges operators work with: Rx optical power −15…−25 dBm normal,
−25…−27 warning, loss of signal below about −28; Tx +0.5…+5 dBm; optic temperature 40–60 °C
(alarm above 70); supply 3.2–3.4 V; bias current 4–15 mA. A failure shows itself in the
readings of the hour or two before it (a *precursor*): Rx falling and CRC errors rising for a
fibre fault, the supply sagging for a failing power adapter, the optic heating up, the CPU
spinning (or, on the new firmware, memory leaking) before a crash, and FEC errors on every ONT
of an OLT port before the port fails.

Failure hazards are compressed in time — a month of this fleet holds the incidents a real fleet
sees in a much longer period — so that offline cases make up about 8 % of the readings a model
is judged on instead of a vanishing minority (see :func:`class_balance`).

The scripted timeline (days from the start):

* days 0–30: slow fibre ageing (Rx falls 0.02–0.25 dB a day, depending on the line);
* day 10: a firmware rollout (``v2.0``) reaches most ONTs over three days; it reports the CRC
  and FEC counters per second instead of per 15-minute interval, and brings a new crash
  pattern (a memory leak instead of a CPU spin);
* day 18: a new device model (``XGS-10``, 10G-PON) is installed, with other baselines (hotter
  optic, stronger Tx, higher bias current), replacing ~3 % of the fleet a day;
* day 24: an OLT port outage raises an alarm and takes all its ONTs offline together;
* smaller port outages (also alarmed) on a few other days.

Examples
--------
>>> sim = OntSimulator(OntScenarioConfig(n_onts=50, days=1, seed=1))
>>> tick = next(iter(sim.ticks()))
>>> tick.time.isoformat(), len(tick.entities), str(tick.entities[0]), str(tick.groups[0])
('2026-03-01T00:00:00+00:00', 50, 'ont-0000', 'r1-olt1-p3')
>>> round(float(tick.features["rx_power"][0]), 2), str(tick.labels[0])
(-23.14, 'online')
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

CLASSES: tuple[str, ...] = (
    "online",
    "fibre",
    "power",
    "overheating",
    "firmware_crash",
    "upstream_outage",
)
NUMERIC_FEATURES: tuple[str, ...] = (
    "rx_power",
    "tx_power",
    "temperature",
    "voltage",
    "bias_current",
    "crc_errors",
    "fec_corrected",
    "packet_loss",
    "cpu",
    "memory",
    "uptime_hours",
    "reboots_24h",
)
CATEGORY_FEATURES: tuple[str, ...] = ("device_model", "firmware", "region")
FEATURES: tuple[tuple[str, str], ...] = tuple(
    [(name, "number") for name in NUMERIC_FEATURES] + [(name, "category") for name in CATEGORY_FEATURES]
)

_FIBRE, _POWER, _HEAT, _CRASH, _OUTAGE = 1, 2, 3, 4, 5
_MODELS = ("HG8245", "F660", "ZXHN-F670")
_NEW_MODEL = "XGS-10"
_OLD_FIRMWARE = {"HG8245": "v1.4", "F660": "v1.2", "ZXHN-F670": "v1.3"}
_NEW_FIRMWARE = "v2.0"
_HORIZON_TICKS_MINUTES = 60


@dataclass(frozen=True)
class OutageSpec:
    """An OLT port outage: which ports, when it starts (in days) and how long it lasts."""

    day: float
    ports: int = 1
    hours: float = 3.0
    alarmed: bool = True


@dataclass(frozen=True)
class OntScenarioConfig:
    """Knobs of the ONT scenario; the defaults are the scripted 30-day timeline."""

    n_onts: int = 2000
    n_regions: int = 4
    olts_per_region: int = 2
    ports_per_olt: int = 4
    days: float = 30
    interval_minutes: int = 15
    seed: int = 7
    start: datetime = datetime(2026, 3, 1, tzinfo=UTC)
    firmware_rollout_day: float | None = 10.0
    firmware_rollout_days: float = 3.0
    firmware_final_share: float = 0.85
    new_model_day: float | None = 18.0
    new_model_share_per_day: float = 0.03
    fibre_ageing: bool = True
    # Failure hazards per reading, before the timeline changes them (time-compressed).
    fibre_hazard: float = 0.0055
    power_hazard: float = 0.0055
    heat_hazard: float = 0.0050
    crash_hazard: float = 0.0050
    outages: tuple[OutageSpec, ...] = field(
        default_factory=lambda: (
            OutageSpec(day=3.4, ports=2),
            OutageSpec(day=6.6, ports=2),
            OutageSpec(day=13.3, ports=1),
            OutageSpec(day=20.5, ports=1),
            OutageSpec(day=24.0, ports=3, hours=4.0),
            OutageSpec(day=27.7, ports=1),
        )
    )

    def __post_init__(self) -> None:
        if self.n_onts < 1:
            raise ValueError(f"n_onts must be at least 1, got {self.n_onts}")
        if self.days <= 0:
            raise ValueError(f"days must be positive, got {self.days}")
        if self.interval_minutes < 1 or 60 % self.interval_minutes:
            raise ValueError(f"interval_minutes must divide 60 (readings per hour), got {self.interval_minutes}")


@dataclass(frozen=True)
class Tick:
    """The readings of one reporting interval: one row per ONT that is online."""

    index: int
    time: datetime
    entities: np.ndarray
    groups: np.ndarray
    features: dict[str, np.ndarray]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.entities)


@dataclass(frozen=True)
class Alarm:
    """An alarm the network raises for an outage (the shape of a generic alarm webhook)."""

    key: str
    name: str
    severity: str
    starts_at: datetime
    ends_at: datetime
    groups: tuple[str, ...]

    def webhook(self, status: str) -> dict[str, object]:
        """The generic alarm webhook's payload for this alarm, ``firing`` or ``resolved``."""
        payload: dict[str, object] = {
            "key": self.key,
            "name": self.name,
            "severity": self.severity,
            "status": status,
            "starts_at": self.starts_at,
            "groups": list(self.groups),
            "labels": {"source": "ont-simulator"},
        }
        if status == "resolved":
            payload["ends_at"] = self.ends_at
        return payload


class OntSimulator:
    """Seeded ONT fleet; :meth:`ticks` yields its readings in time order.

    Parameters
    ----------
    config
        The scenario's knobs. Two simulators with the same config yield identical streams.
    """

    def __init__(self, config: OntScenarioConfig | None = None) -> None:
        self.config = config or OntScenarioConfig()

    # -- fleet -------------------------------------------------------------------------
    @property
    def ticks_per_hour(self) -> int:
        return 60 // self.config.interval_minutes

    @property
    def n_ticks(self) -> int:
        return int(round(self.config.days * 24 * self.ticks_per_hour))

    def time_of(self, index: int) -> datetime:
        return self.config.start + timedelta(minutes=self.config.interval_minutes * index)

    def ports(self) -> list[str]:
        c = self.config
        return [
            f"r{r}-olt{o}-p{p}"
            for r in range(c.n_regions)
            for o in range(c.olts_per_region)
            for p in range(c.ports_per_olt)
        ]

    def _outage_plan(self, port_of: np.ndarray) -> list[tuple[int, int, np.ndarray, OutageSpec]]:
        """Pick the ports of each outage (seeded); returns (start tick, end tick, ports, spec)."""
        rng = np.random.default_rng([self.config.seed, 99])
        ports = np.array(self.ports())
        plan = []
        for spec in self.config.outages:
            if spec.day >= self.config.days:
                continue
            # Adjacent ports of one OLT card fail together.
            first = int(rng.integers(0, len(ports) - spec.ports + 1))
            chosen = ports[first : first + spec.ports]
            start = int(round(spec.day * 24 * self.ticks_per_hour))
            end = start + int(round(spec.hours * self.ticks_per_hour))
            plan.append((start, end, chosen, spec))
        return plan

    def marks(self) -> dict[float, str]:
        """The scripted changes a timeline of this scenario marks, by day from the start.

        The firmware rollout, the new device model and the widest port outage: the changes a
        model is judged against (the smaller outages are noise a model must ride out). A change
        the config turns off, or that falls after the last day, is not marked.

        Examples
        --------
        >>> OntSimulator().marks()
        {10.0: 'firmware v2.0 rollout', 18.0: 'new device model', 24.0: 'OLT port outage'}
        >>> OntSimulator(OntScenarioConfig(days=12, new_model_day=None)).marks()
        {10.0: 'firmware v2.0 rollout'}
        """
        c = self.config
        marks: dict[float, str] = {}
        if c.firmware_rollout_day is not None:
            marks[c.firmware_rollout_day] = f"firmware {_NEW_FIRMWARE} rollout"
        if c.new_model_day is not None:
            marks[c.new_model_day] = "new device model"
        widest = max((spec.ports for spec in c.outages), default=0)
        for spec in c.outages:
            if spec.ports == widest:
                marks[spec.day] = "OLT port outage"
        return {day: text for day, text in sorted(marks.items()) if day < c.days}

    def alarms(self) -> list[Alarm]:
        """The alarms the network raises for the scripted outages (alarmed ones only)."""
        port_of = self._fleet(np.random.default_rng(self.config.seed))["port"]
        alarms = []
        for start, end, ports, spec in self._outage_plan(port_of):
            if not spec.alarmed:
                continue
            # The OLT raises loss-of-signal for the port when its ONTs drop, not before.
            alarms.append(
                Alarm(
                    key=f"olt-port-down/{'+'.join(ports)}/{self.time_of(start).isoformat()}",
                    name="OltPortDown",
                    severity="critical",
                    starts_at=self.time_of(start),
                    ends_at=self.time_of(end),
                    groups=tuple(str(p) for p in ports),
                )
            )
        return alarms

    def _fleet(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        n = c.n_onts
        ports = np.array(self.ports())
        port = ports[rng.integers(0, len(ports), n)]
        region = np.array([p.split("-")[0] for p in port])
        model = np.array(_MODELS)[rng.choice(len(_MODELS), n, p=[0.45, 0.35, 0.20])]
        firmware = np.array([_OLD_FIRMWARE[m] for m in model])
        return {
            "entity": np.array([f"ont-{i:04d}" for i in range(n)]),
            "port": port,
            "region": region,
            "model": model,
            "firmware": firmware,
            "rx_base": rng.uniform(-23.0, -16.5, n),
            "tx_base": rng.uniform(1.5, 3.5, n),
            "temp_base": rng.uniform(44.0, 54.0, n),
            "bias_base": rng.uniform(6.0, 11.0, n),
            "ageing": rng.gamma(2.0, 0.05, n) if c.fibre_ageing else np.zeros(n),
            "firmware_day": rng.uniform(0, c.firmware_rollout_days, n)
            if c.firmware_rollout_day is not None
            else np.full(n, np.inf),
            "firmware_taker": rng.random(n) < c.firmware_final_share,
            "replace_day": rng.exponential(1.0 / c.new_model_share_per_day, n)
            if c.new_model_day is not None
            else np.full(n, np.inf),
        }

    # -- stream ------------------------------------------------------------------------
    def ticks(self) -> Iterator[Tick]:
        """Yield each interval's readings, with their labels, in time order."""
        c = self.config
        rng = np.random.default_rng(c.seed)
        fleet = self._fleet(rng)
        n = c.n_onts
        tph = self.ticks_per_hour
        horizon = _HORIZON_TICKS_MINUTES // c.interval_minutes
        # The ONTs of each outage's ports, computed once.
        outages = [
            (start, end, np.isin(fleet["port"], ports)) for start, end, ports, _spec in self._outage_plan(fleet["port"])
        ]

        # Per-ONT state. ``countdown`` > 0: a failure of ``cause`` starts in that many ticks;
        # ``offline`` > 0: the ONT is offline for that many more ticks.
        countdown = np.zeros(n, dtype=int)
        length = np.ones(n, dtype=int)
        cause = np.zeros(n, dtype=int)
        offline = np.zeros(n, dtype=int)
        uptime = rng.uniform(1, 24 * 40, n)
        reboot_ticks: list[np.ndarray] = []
        model = fleet["model"].copy()
        firmware = fleet["firmware"].copy()
        rx_base = fleet["rx_base"].copy()
        tx_base = fleet["tx_base"].copy()
        temp_base = fleet["temp_base"].copy()
        bias_base = fleet["bias_base"].copy()

        for t in range(self.n_ticks):
            day = t / (24 * tph)
            hour = (t % (24 * tph)) / tph

            # Timeline: firmware rollout and new device model.
            if c.firmware_rollout_day is not None:
                upgraded = (
                    (day >= c.firmware_rollout_day + fleet["firmware_day"])
                    & fleet["firmware_taker"]
                    & (model != _NEW_MODEL)
                )
                firmware = np.where(upgraded, _NEW_FIRMWARE, firmware)
            if c.new_model_day is not None:
                replaced = (day >= c.new_model_day + fleet["replace_day"]) & (model != _NEW_MODEL)
                replaced &= offline == 0
                if replaced.any():
                    model = np.where(replaced, _NEW_MODEL, model)
                    firmware = np.where(replaced, "x1.0", firmware)
                    k = int(replaced.sum())
                    rx_base[replaced] = rng.uniform(-21.0, -15.0, k)
                    tx_base[replaced] = rng.uniform(4.0, 6.5, k)
                    temp_base[replaced] = rng.uniform(58.0, 63.0, k)
                    bias_base[replaced] = rng.uniform(16.0, 21.0, k)
                    uptime[replaced] = 0.0
                    countdown[replaced] = 0
            new_fw = firmware == _NEW_FIRMWARE
            new_model = model == _NEW_MODEL

            # Outages: ports whose outage starts within the precursor span, or is under way.
            port_outage_in = np.full(n, 10**9)
            for start, end, on_port in outages:
                if start - 2 * tph <= t < start:
                    port_outage_in = np.where(on_port, np.minimum(port_outage_in, start - t), port_outage_in)
                if start <= t < end:
                    go_down = on_port & (offline == 0)
                    offline[go_down] = end - t
                    countdown[go_down] = 0

            # New individual failures start on healthy, online ONTs.
            idle = (offline == 0) & (countdown == 0) & (port_outage_in > horizon)
            ageing_loss = fleet["ageing"] * day
            rx_level = rx_base - ageing_loss
            fibre_h = c.fibre_hazard * (1.0 + np.clip(-(rx_level + 24.0), 0, 4))
            heat_h = np.full(n, c.heat_hazard * (1.0 + 0.6 * np.sin(2 * np.pi * (hour - 9) / 24)))
            crash_h = np.where(new_fw, 1.8 * c.crash_hazard, c.crash_hazard)
            hazards = np.stack([fibre_h, np.full(n, c.power_hazard), heat_h, crash_h], axis=1)
            draws = rng.random((n, 4)) < hazards
            starting = idle & draws.any(axis=1)
            if starting.any():
                first_cause = np.argmax(draws, axis=1) + 1
                idx = np.flatnonzero(starting)
                cause[idx] = first_cause[idx]
                length[idx] = rng.integers(horizon + 1, 2 * horizon + 1, idx.size)
                countdown[idx] = length[idx]
            # Port outages override: every ONT of the port shares the precursor.
            in_port_precursor = (port_outage_in <= 2 * tph) & (offline == 0)
            cause = np.where(in_port_precursor, _OUTAGE, cause)
            countdown = np.where(in_port_precursor, port_outage_in, countdown)
            length = np.where(in_port_precursor, 2 * tph, length)

            online = offline == 0
            failing = online & (countdown > 0)
            strength = np.where(failing, 1.0 - (countdown - 1) / np.maximum(length, 1), 0.0)

            # Readings.
            noise = rng.normal(size=(n, 10))
            fibre = failing & (cause == _FIBRE)
            power = failing & (cause == _POWER)
            heat = failing & (cause == _HEAT)
            crash = failing & (cause == _CRASH)
            outage = failing & (cause == _OUTAGE)

            rx = rx_level + 0.35 * noise[:, 0] - 6.0 * strength * fibre - 0.5 * strength * outage
            tx = tx_base + 0.15 * noise[:, 1]
            temp = (
                temp_base
                + 3.0 * np.sin(2 * np.pi * (hour - 9) / 24)
                + 1.2 * noise[:, 2]
                + (22.0 + 6.0 * new_model) * strength * heat
            )
            voltage = 3.30 + 0.03 * noise[:, 3] - 0.28 * strength * power
            bias = bias_base + 0.6 * noise[:, 4] + 2.5 * strength * heat - 2.0 * strength * power
            crc = rng.poisson(2.0 + 400.0 * strength * fibre).astype(float)
            fec = rng.poisson(30.0 + 2500.0 * strength * fibre + 300.0 * strength * outage).astype(float)
            interval_seconds = c.interval_minutes * 60.0
            # Firmware v2.0 reports the counters per second instead of per interval.
            crc = np.where(new_fw, crc / interval_seconds, crc)
            fec = np.where(new_fw, fec / interval_seconds, fec)
            old_crash = crash & ~new_fw
            new_crash = crash & new_fw
            loss = np.clip(
                0.05 + 0.05 * np.abs(noise[:, 5]) + 1.0 * strength * fibre + 15.0 * strength * outage,
                0.0,
                100.0,
            )
            cpu = np.clip(22.0 + 8.0 * noise[:, 6] + 8.0 * new_model + 70.0 * strength * old_crash, 1.0, 100.0)
            memory = np.clip(38.0 + 6.0 * noise[:, 7] + 5.0 * new_fw + 60.0 * strength * new_crash, 5.0, 100.0)

            labels_idx = np.where(failing & (countdown <= horizon), cause, 0)

            rows = np.flatnonzero(online)
            recent_reboots = np.zeros(n)
            for ticks_ago, rebooted in enumerate(reversed(reboot_ticks)):
                if ticks_ago >= 24 * tph:
                    break
                recent_reboots += rebooted
            features = {
                "rx_power": rx,
                "tx_power": tx,
                "temperature": temp,
                "voltage": voltage,
                "bias_current": bias,
                "crc_errors": crc,
                "fec_corrected": fec,
                "packet_loss": loss,
                "cpu": cpu,
                "memory": memory,
                "uptime_hours": uptime.copy(),
                "reboots_24h": recent_reboots,
                "device_model": model,
                "firmware": firmware,
                "region": fleet["region"],
            }
            yield Tick(
                index=t,
                time=self.time_of(t),
                entities=fleet["entity"][rows],
                groups=fleet["port"][rows],
                features={k: np.round(v[rows], 4) if v.dtype.kind == "f" else v[rows] for k, v in features.items()},
                labels=np.array(CLASSES)[labels_idx[rows]],
            )

            # Advance: failures that reach zero go offline; offline ONTs come back rebooted.
            going_down = failing & (countdown == 1)
            countdown = np.where(failing, countdown - 1, countdown)
            durations = rng.integers(2, 3 * tph, n)
            offline = np.where(going_down & (cause != _OUTAGE), durations, offline)
            coming_back = offline == 1
            offline = np.where(offline > 0, offline - 1, 0)
            rebooted = coming_back.astype(float)
            reboot_ticks.append(rebooted)
            if len(reboot_ticks) > 24 * tph:
                reboot_ticks.pop(0)
            uptime = np.where(coming_back, 0.0, uptime + (online * c.interval_minutes / 60.0))
            cause = np.where(countdown == 0, 0, cause)


def class_balance(labels: np.ndarray) -> dict[str, float]:
    """Share of each class among ``labels``, in :data:`CLASSES` order.

    >>> class_balance(np.array(["online", "online", "fibre", "online"]))["fibre"]
    0.25
    """
    total = max(len(labels), 1)
    return {name: float(np.sum(labels == name)) / total for name in CLASSES}
