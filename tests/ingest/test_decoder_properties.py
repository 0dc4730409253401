"""Property: whatever bytes arrive on whatever topic, the decoder yields points or a dead letter."""

from __future__ import annotations

import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cityiot.domain.catalogue import KINDS
from cityiot.ingest.broker import Delivery
from tests.ingest.conftest import offline_ingest

INGEST = offline_ingest()
TOPICS = [
    f"city/{v}/{k}-{v}/{ch}"
    for k in KINDS
    for v in ("acme", "oldco")
    for ch in ("telemetry", "status")
] + ["city/x/y/telemetry", "city/acme/a b/status"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
metric_names = st.sampled_from(sorted({m.name for k in KINDS.values() for m in k.metrics}) + ["x"])
plausible = st.fixed_dictionaries(
    {"metrics": st.dictionaries(metric_names, json_values, max_size=5)},
    optional={"ts": json_values | st.integers(), "seq": json_values},
)


def check(topic: str, payload: bytes) -> None:
    batch = INGEST.intake.batch
    before = (len(batch.lines), len(batch.dead_letters), INGEST.counters.duplicates)
    INGEST.handle(Delivery(topic, payload, 1, 1, 0), int(time.time() * 1000))
    after = (len(batch.lines), len(batch.dead_letters), INGEST.counters.duplicates)
    assert after != before or batch.status_lines, (topic, payload)
    for line in batch.lines[before[0] :]:
        assert line.count(b"\n") == 1 and line.endswith(b"\n")
    if len(INGEST.intake.batch.lines) > 10_000:
        INGEST.intake.batch = type(batch)()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TOPICS), st.binary(max_size=300))
def test_any_bytes_give_points_or_a_dead_letter(topic: str, payload: bytes) -> None:
    check(topic, payload)


# 300: drawing these nested documents is what costs here (not the decoding), and
# tests/faults/test_decoder_million.py puts the same shapes through the same handle() by the
# million; this one stays the quick check beside the decoder.
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(TOPICS),
    plausible | st.fixed_dictionaries({"readings": st.lists(plausible, max_size=4)}),
)
def test_any_json_shape_gives_points_or_a_dead_letter(topic: str, document: object) -> None:
    # The stdlib encoder: it also writes huge integers and NaN/Infinity literals.
    check(topic, json.dumps(document).encode())
