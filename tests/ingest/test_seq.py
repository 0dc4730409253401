"""Duplicate detection by ``seq``: only a (seq, time) seen before is a repeat, whatever the
order readings arrive in; a device that restarts its seq is not mistaken for one."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cityiot.domain.settings import Settings
from cityiot.ingest.broker import Delivery
from cityiot.ingest.intake import SEQ_WINDOW
from cityiot.ingest.pipeline import Ingest
from tests.ingest.conftest import offline_ingest


def _ingest() -> Ingest:
    return Ingest(Settings(), influx=None, session_factory=None, link=None)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    order=st.permutations(list(range(1, 41))),
    repeats=st.lists(st.integers(1, 40), max_size=20),
)
def test_out_of_order_seqs_are_kept_and_only_true_repeats_dropped(
    order: list[int], repeats: list[int]
) -> None:
    ingest = _ingest()
    t0 = 1_763_856_000_000
    kept = [s for s in order if not ingest.intake._repeated("d", s, t0 + s * 1000)]
    assert kept == order  # every first arrival is stored, in any order
    for s in repeats:  # a redelivery carries the same seq and time
        assert ingest.intake._repeated("d", s, t0 + s * 1000)


def test_a_rebooted_device_starts_its_seq_again() -> None:
    ingest = _ingest()
    assert not ingest.intake._repeated("d", 500, 10_000)
    assert not ingest.intake._repeated("d", 1, 20_000)  # seq back to 1, time moved on
    assert not ingest.intake._repeated("d", 2, 21_000)
    assert ingest.intake._repeated("d", 1, 20_000)


def test_a_seq_older_than_the_window_is_stored_again_harmlessly() -> None:
    ingest = _ingest()
    assert not ingest.intake._repeated("d", 1, 1_000)
    assert not ingest.intake._repeated("d", 1 + SEQ_WINDOW + 5, 9_000)
    # Too far below to tell: stored (InfluxDB overwrites the identical point).
    assert not ingest.intake._repeated("d", 1, 1_000)


def test_payloads_that_once_crashed_the_decoder_are_dead_letters_with_a_reason() -> None:
    ingest = offline_ingest()
    cases = {
        ("telemetry", b'{"metrics": {"\xaa": 1}}'): "UTF-8",
        ("telemetry", b'{"ts": 1' + b"0" * 400 + b', "metrics": {"tilt_deg": 1}}'): "is not a time",
        ("telemetry", b'{"metrics": {"tilt_deg": 1' + b"0" * 400 + b"}}"): "too large",
        ("status", b'{"\xaa": true}'): "UTF-8",
    }
    for (channel, payload), reason in cases.items():
        batch = ingest.intake.batch
        before = len(batch.dead_letters)
        ingest.handle(
            Delivery(f"city/acme/manhole-acme/{channel}", payload, 1, 1, 0), 1_763_856_000_000
        )
        letters = batch.dead_letters[before:]
        assert len(letters) == 1 and reason in letters[0].reason, (payload[:40], letters)
        assert len(letters[0].reason) < 300
