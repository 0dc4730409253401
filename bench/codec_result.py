"""The codec section's figures (bench/codecs.py): each drain of the decoding ingest, what one
decode costs in process, the goals of issue 25, and the table ``cityiot bench`` prints."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

GOAL_RATE = 5000.0  # decoded messages stored per second on one ingest, at least
GOAL_DROP_PCT = 10.0  # the others' stored rate may fall this much at most beside a hostile codec
HOSTILE_PER_S = 10.0  # the hostile device's messages per second of the others' drain

# The loads a drain can carry (the table's columns, in this order).
JSON, FRAMES, HOSTILE = "json", "frames", "frames+hostile"
LOADS = (JSON, FRAMES, HOSTILE)
# A round's drains, in one order or its reverse, round by round: a drain's place in its round
# moves its rate (the third of three runs a few % slower here: InfluxDB flushes what the two
# before wrote), so each load and each pair is measured as often in either place.
ORDERS = ((JSON, FRAMES, HOSTILE), (HOSTILE, FRAMES, JSON))


def order_of(number: int) -> tuple[str, ...]:
    """The drains of round ``number`` (from 1), in the order they run."""
    return ORDERS[(number - 1) % len(ORDERS)]


def balanced(by_round: dict[int, float]) -> float:
    """The median of each order's rounds, averaged over the orders: a figure in which the
    place of a drain in its round counts alike whatever the number of rounds."""
    classes: dict[int, list[float]] = {}
    for number, value in by_round.items():
        classes.setdefault((number - 1) % len(ORDERS), []).append(value)
    return statistics.fmean(statistics.median(values) for values in classes.values())


@dataclass(slots=True)
class Drain:
    """One drain of the section's ingest: ``sent`` messages of one load (plus ``hostile``
    messages to the looping codec's device, interleaved), timed until InfluxDB held them."""

    load: str  # json | frames | frames+hostile
    round: int
    sent: int  # the others' messages: the readings to store
    hostile: int = 0
    stored: int | None = None
    publish_s: float | None = None  # queueing the backlog while the ingest was stopped
    drain_s: float | None = None
    rate: float | None = None  # the others' messages stored per second
    cpu_s: float | None = None  # the ingest process's
    broker_cpu_s: float | None = None
    influx_cpu_s: float | None = None
    end_by: str = ""
    timed_out: bool = False

    @property
    def lost(self) -> int:
        return max(0, self.sent - (self.stored or 0))

    @property
    def duplicated(self) -> int:
        return max(0, (self.stored or 0) - self.sent)

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.stored == self.sent

    @property
    def ingest_us(self) -> float | None:
        """The ingest process's CPU per message drained (the hostile ones included), in µs:
        what decoding, validating, storing and judging one costs it."""
        if self.cpu_s is None or not self.sent:
            return None
        return round(self.cpu_s / (self.sent + self.hostile) * 1e6, 1)

    @property
    def cpu_per_stored_us(self) -> float | None:
        """The ingest's CPU per message of the others (the hostile's cost on top), in µs."""
        if self.cpu_s is None or not self.sent:
            return None
        return self.cpu_s / self.sent * 1e6

    @property
    def hostile_per_s(self) -> float | None:
        """The hostile device's messages per second of this drain (HOSTILE_PER_S planned)."""
        if not self.hostile or not self.drain_s:
            return None
        return round(self.hostile / self.drain_s, 1)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            lost=self.lost,
            duplicated=self.duplicated,
            ok=self.ok,
            ingest_us=self.ingest_us,
            hostile_per_s=self.hostile_per_s,
        )
        return out


@dataclass(frozen=True, slots=True)
class CallCost:
    """One call's cost measured in process over ``calls`` calls, in µs."""

    calls: int
    min_us: float
    median_us: float

    @classmethod
    def of(cls, nanoseconds: list[int]) -> CallCost:
        return cls(
            len(nanoseconds),
            round(min(nanoseconds) / 1000, 2),
            round(statistics.median(nanoseconds) / 1000, 2),
        )


@dataclass(slots=True)
class CodecResult:
    """The codec section: drains of JSON, of decoded frames and of decoded frames beside a
    hostile codec, round by round on one ingest; and the in-process cost of one decode."""

    devices: int  # per load (the JSON vendor's, the frame vendor's), sentinels aside
    messages: int  # per drain
    rounds: int
    qos: int
    timeout_ms: float = 100.0  # the sandbox's limit of a call (CITYIOT_CODEC_TIMEOUT_MS)
    probation_ms: float = 2.0  # its limit of a call while on probation after a time-out
    decode: CallCost | None = None  # FileCodec.decode of one frame (sandbox + mapping)
    decoder: CallCost | None = None  # its decodeUplink in the sandbox alone
    json_decode: CallCost | None = None  # the JSON codec's decode of one message
    drains: list[Drain] = field(default_factory=list)
    hostile_dead_letters: int | None = None  # stored by the ingest for the looping device
    hostile_reasons: list[str] = field(default_factory=list)  # its distinct reasons
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def of(self, load: str) -> list[Drain]:
        return [d for d in self.drains if d.load == load]

    def rate(self, load: str) -> float | None:
        """``load``'s rate over the rounds (:func:`balanced`); None when a drain of it
        failed: no figure rather than a flattering one."""
        drains = self.of(load)
        if not drains or not all(d.ok and d.rate for d in drains):
            return None
        return round(balanced({d.round: d.rate for d in drains if d.rate}), 1)

    @property
    def ratio(self) -> float | None:
        """Decoded frames' rate ÷ JSON's."""
        frames, json = self.rate(FRAMES), self.rate(JSON)
        return None if frames is None or not json else round(frames / json, 3)

    def _drops(self) -> dict[int, float]:
        without = {d.round: d for d in self.of(FRAMES) if d.ok and d.rate}
        return {
            d.round: round((1 - d.rate / without[d.round].rate) * 100, 1)  # type: ignore[operator]
            for d in self.of(HOSTILE)
            if d.ok and d.rate and d.round in without
        }

    @property
    def drops_pct(self) -> list[float]:
        """Round by round, how much lower the others' rate was beside the hostile codec
        than without it, in % (negative: higher)."""
        return list(self._drops().values())

    @property
    def cpu_rises_pct(self) -> list[float]:
        """Round by round, how much more ingest CPU each of the others' messages took beside
        the hostile codec, in %: the drop's cause, and steadier than rates on a busy machine
        (where other processes take turns on the cores)."""
        without = {d.round: d for d in self.of(FRAMES) if d.cpu_per_stored_us}
        return [
            round((d.cpu_per_stored_us / without[d.round].cpu_per_stored_us - 1) * 100, 1)  # type: ignore[operator]
            for d in self.of(HOSTILE)
            if d.cpu_per_stored_us and d.round in without
        ]

    @property
    def limits_pct(self) -> list[float]:
        """Round by round, the looping calls' time limits as a share of the drain beside
        them, in %: each call on probation costs ``probation_ms``, the first ever
        ``timeout_ms`` (in the first such drain): what the sandbox lets the hostile take."""
        shares = []
        for index, d in enumerate(self.of(HOSTILE)):
            if not d.drain_s:
                continue
            spent_ms = d.hostile * self.probation_ms
            if index == 0 and d.hostile:
                spent_ms += self.timeout_ms - self.probation_ms
            shares.append(round(spent_ms / (d.drain_s * 1000) * 100, 1))
        return shares

    @property
    def drop_pct(self) -> float | None:
        """The drop over the rounds (:func:`balanced`: the hostile drain runs after the
        frames in one order, before them in the other)."""
        drops = self._drops()
        if not drops or len(drops) != len(self.of(HOSTILE)):
            return None
        return round(balanced(drops), 1)

    @property
    def rate_met(self) -> bool | None:
        rate = self.rate(FRAMES)
        return None if rate is None else rate >= GOAL_RATE

    @property
    def drop_met(self) -> bool | None:
        drop = self.drop_pct
        return None if drop is None else drop <= GOAL_DROP_PCT

    @property
    def ok(self) -> bool:
        """Figures are valid: no error, every drain stored all it was sent, once."""
        return self.error is None and bool(self.drains) and all(d.ok for d in self.drains)

    def as_dict(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "messages": self.messages,
            "rounds": self.rounds,
            "qos": self.qos,
            "decode": None if self.decode is None else asdict(self.decode),
            "decoder": None if self.decoder is None else asdict(self.decoder),
            "json_decode": None if self.json_decode is None else asdict(self.json_decode),
            "drains": [d.as_dict() for d in self.drains],
            "json_rate": self.rate(JSON),
            "decoded_rate": self.rate(FRAMES),
            "hostile_rate": self.rate(HOSTILE),
            "ratio": self.ratio,
            "drops_pct": self.drops_pct,
            "drop_pct": self.drop_pct,
            "cpu_rises_pct": self.cpu_rises_pct,
            "limits_pct": self.limits_pct,
            "timeout_ms": self.timeout_ms,
            "probation_ms": self.probation_ms,
            "goals": {
                "decoded_rate": {"goal": GOAL_RATE, "met": self.rate_met},
                "drop_pct": {"goal": GOAL_DROP_PCT, "met": self.drop_met},
            },
            "hostile_per_s": HOSTILE_PER_S,
            "hostile_dead_letters": self.hostile_dead_letters,
            "hostile_reasons": self.hostile_reasons,
            "error": self.error,
            "notes": self.notes,
            "ok": self.ok,
        }


# -- the table ----------------------------------------------------------------------------


def _n(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _met(met: bool | None) -> str:
    return "–" if met is None else "[green]met[/]" if met else "[red]not met[/]"


def _range(drains: list[Drain]) -> str:
    rates = [d.rate for d in drains if d.rate is not None]
    return f"{min(rates) / 1000:,.1f}–{max(rates) / 1000:,.1f}k" if rates else "–"


def codec_table(result: CodecResult) -> Table:
    """The three loads side by side: medians over the rounds, and each round's rate."""
    t = Table(title="codecs: one ingest, decoding", title_justify="left")
    t.add_column("", style="bold", no_wrap=True)
    for load in LOADS:
        t.add_column(load, justify="right", no_wrap=True)

    def median_of(load: str, pick: Any) -> float | None:
        values = [v for d in result.of(load) if (v := pick(d)) is not None]
        return statistics.median(values) if values else None

    def rate_cell(load: str) -> str:
        drains = result.of(load)
        if any(d.timed_out for d in drains):
            return "[red]timeout[/]"
        if any(not d.ok for d in drains):
            return "[red]lost[/]"
        return _n(result.rate(load))

    t.add_row("messages/s stored", *(rate_cell(load) for load in LOADS))
    if result.rounds > 1:
        t.add_row("  rounds' range", *(_range(result.of(load)) for load in LOADS))
    json_rate = result.rate(JSON)
    t.add_row(
        "× JSON",
        *(
            "–" if json_rate is None or result.rate(load) is None
            else f"{result.rate(load) / json_rate:.2f}"  # type: ignore[operator]
            for load in LOADS
        ),
    )  # fmt: skip
    t.add_row(
        "stored of sent, all rounds",
        *(
            f"{sum(d.stored or 0 for d in result.of(load)):,} of "
            f"{sum(d.sent for d in result.of(load)):,}"
            for load in LOADS
        ),
    )
    t.add_row(
        "looping codec's messages",
        "–",
        "–",
        _n(sum(d.hostile for d in result.of(HOSTILE))),
    )
    t.add_row("drain s", *(_n(median_of(load, lambda d: d.drain_s), 2) for load in LOADS))
    t.add_row(
        "ingest CPU µs / message",
        *(_n(median_of(load, lambda d: d.ingest_us), 1) for load in LOADS),
    )
    t.add_row("CPU s broker", *(_n(median_of(load, lambda d: d.broker_cpu_s), 1) for load in LOADS))
    t.add_row(
        "CPU s InfluxDB", *(_n(median_of(load, lambda d: d.influx_cpu_s), 1) for load in LOADS)
    )
    return t


def print_codecs(result: CodecResult, console: Console) -> None:
    """The table, one decode's cost, the goals, and what the figures rest on."""
    console.print(codec_table(result))
    if result.rounds > 1:
        for load in LOADS:
            rates = " / ".join(_n(d.rate) for d in result.of(load))
            console.print(f"  {load}, round by round: {rates}", highlight=False)
    if result.error:
        console.print(f"[bold]codecs[/]: [red]{result.error}[/]", highlight=False)
    if result.decode is not None and result.json_decode is not None:
        sandbox = (
            f"; the decoder in the sandbox alone {result.decoder.median_us:g} µs"
            if result.decoder is not None
            else ""
        )
        console.print(
            f"one decode (FileCodec.decode of a 16-byte frame, in process, "
            f"{result.decode.calls:,} calls): min {result.decode.min_us:g} µs, median "
            f"{result.decode.median_us:g} µs{sandbox}; the JSON codec's decode of the same "
            f"reading: min {result.json_decode.min_us:g} µs, median "
            f"{result.json_decode.median_us:g} µs",
            highlight=False,
        )
    rate, drop = result.rate(FRAMES), result.drop_pct
    console.print(
        f"goal ≥ {GOAL_RATE:,.0f} decoded messages/s on one ingest: {_n(rate)} — "
        f"{_met(result.rate_met)}",
        highlight=False,
    )
    drops = ", ".join(f"{d:g} %" for d in result.drops_pct) or "–"
    rises = ", ".join(f"{d:+g} %" for d in result.cpu_rises_pct) or "–"
    console.print(
        f"goal: a looping codec's device at {HOSTILE_PER_S:g}/s lowers the others' rate by ≤ "
        f"{GOAL_DROP_PCT:g} %: {_n(drop, 1)} % (rounds: {drops}) — {_met(result.drop_met)}; "
        f"the ingest's CPU per message of the others beside it, round by round: {rises}",
        highlight=False,
    )
    limits = ", ".join(f"{d:g} %" for d in result.limits_pct) or "–"
    console.print(
        f"  what the sandbox lets the looping codec take: {result.probation_ms:g} ms a call "
        f"on probation, {result.timeout_ms:g} ms for its first; of each drain beside it: "
        f"{limits}",
        highlight=False,
    )
    if result.hostile_dead_letters is not None:
        reasons = "; ".join(result.hostile_reasons[:2]) or "none"
        console.print(
            f"the looping codec's messages: {result.hostile_dead_letters:,} dead letters "
            f"({reasons})",
            highlight=False,
        )
    for note in result.notes:
        console.print(f"  [yellow]note:[/] {note}", highlight=False)
    console.print(
        f"codec load: {result.messages:,} messages a drain from {result.devices:,} manholes "
        f"per load (JSON vendor, frame vendor), QoS {result.qos}; {result.rounds} round(s) of "
        "json, frames and frames beside the looping codec, in that order and the reverse in "
        "turn; each figure the median of each order's rounds, averaged over the orders",
        highlight=False,
    )
