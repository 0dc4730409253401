"""Dead letters through the API: fields, filters, newest-first pages, and who may see them."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest

from cityiot.storage.deadletters import DeadLetterIn, add_dead_letters
from tests.api.conftest import Api

T0 = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)  # 10:00 in Zhumadian
BINARY = b"\x01\xff\xfe\x00\x7f"
TIED = 7  # dead letters received in the same millisecond: pages must still be exact


def letter(
    seconds: float, topic: str, reason: str, payload: bytes = b"{}", size: int | None = None
) -> DeadLetterIn:
    parts = topic.split("/")
    return DeadLetterIn(
        topic=topic,
        vendor=parts[1] if len(parts) == 4 else None,
        device_id=parts[2] if len(parts) == 4 else None,
        payload=payload,
        payload_size=len(payload) if size is None else size,
        reason=reason,
        received_at=T0 + dt.timedelta(seconds=seconds),
    )


LETTERS = [
    letter(1, "city/acme/mh-1/telemetry", "tilt_deg: 400 is outside the range 0..90", b'{"a":1}'),
    letter(2, "city/acme/sl-1/telemetry", "unknown metric 'foo' for a streetlight"),
    letter(3, "city/oldco/mh-2/telemetry", "hexframe: Bad CHECKSUM", BINARY),
    letter(4, "city/acme/mh-1/telemetry", "not JSON: 100% garbage", b"x" * 16, size=9000),
    letter(5, "garbage/topic", "topic is not city/{vendor}/{device_id}/telemetry"),
    *(letter(6, "city/acme/pk-1/telemetry", f"seq {i} out of order") for i in range(TIED)),
]


@pytest.fixture
async def stored(api: Api) -> Api:
    # Stored out of time order on purpose: the list is by receive time, not by insertion.
    await add_dead_letters(api.sessions, list(reversed(LETTERS)))
    return api


async def listing(api: Api, role: str = "admin", **params: Any) -> list[dict[str, Any]]:
    r = await api.client(role).get("/api/v1/deadletters", params={"limit": 1000, **params})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["next_cursor"] is None
    items: list[dict[str, Any]] = body["items"]
    return items


async def test_newest_first_with_payload_as_text_and_base64(stored: Api) -> None:
    items = await listing(stored)
    assert len(items) == len(LETTERS)
    times = [dt.datetime.fromisoformat(i["received_at"]) for i in items]
    assert times == sorted(times, reverse=True)
    assert all(i["received_at"].endswith("+08:00") for i in items)

    first = items[-1]
    assert first["topic"] == "city/acme/mh-1/telemetry"
    assert (first["vendor"], first["device_id"]) == ("acme", "mh-1")
    assert first["received_at"] == "2026-11-23T10:00:01.000+08:00"
    assert (first["payload"], first["payload_size"], first["truncated"]) == ('{"a":1}', 7, False)

    binary = next(i for i in items if i["device_id"] == "mh-2")
    assert base64.b64decode(binary["payload_base64"]) == BINARY
    assert "\ufffd" in binary["payload"]  # undecodable bytes replaced, never an error

    cut = next(i for i in items if i["payload_size"] == 9000)
    assert cut["truncated"] is True and cut["payload"] == "x" * 16

    no_device = next(i for i in items if i["topic"] == "garbage/topic")
    assert no_device["vendor"] is None and no_device["device_id"] is None

    r = await stored.client().get(f"/api/v1/deadletters/{binary['id']}")
    assert r.status_code == 200 and r.json() == binary


async def test_filters(stored: Api) -> None:
    assert {i["vendor"] for i in await listing(stored, vendor="oldco")} == {"oldco"}
    mh1 = await listing(stored, device_id="mh-1")
    assert [i["reason"][:4] for i in mh1] == ["not ", "tilt"]
    checksum = await listing(stored, reason="bad checksum")  # any case
    assert [i["device_id"] for i in checksum] == ["mh-2"]
    # % and _ are text, not wildcards
    assert [i["reason"] for i in await listing(stored, reason="%")] == ["not JSON: 100% garbage"]
    assert len(await listing(stored, reason="_")) == 2  # tilt_deg, {device_id}
    window = await listing(stored, since="2026-11-23T10:00:02+08:00", until="2026-11-23T02:00:04Z")
    assert [i["device_id"] for i in window] == ["mh-2", "sl-1"]
    naive = await listing(stored, since="2026-11-23T10:00:05")  # no offset: +08:00
    assert len(naive) == 1 + TIED
    assert await listing(stored, vendor="acme", device_id="mh-2") == []


async def test_pages_follow_each_other_without_gaps_or_repeats(stored: Api) -> None:
    everything = [i["id"] for i in await listing(stored)]
    client = stored.client("operator")
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        r = await client.get("/api/v1/deadletters", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) <= 3
        seen += [i["id"] for i in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == everything
    assert pages == -(-len(LETTERS) // 3)

    r = await client.get("/api/v1/deadletters", params={"cursor": "not-a-cursor"})
    assert r.status_code == 400 and "next_cursor" in r.json()["detail"]


async def test_who_may_see_dead_letters(stored: Api) -> None:
    assert len(await listing(stored, "operator")) == len(LETTERS)

    own = await listing(stored, "vendor")  # the acme key
    assert own and {i["vendor"] for i in own} == {"acme"}
    assert len(own) == sum(1 for d in LETTERS if d.vendor == "acme")
    vendor = stored.client("vendor")
    r = await vendor.get("/api/v1/deadletters", params={"vendor": "oldco"})
    assert r.status_code == 403 and "oldco" in r.json()["detail"]
    others = (await listing(stored, vendor="oldco"))[0]["id"]
    r = await vendor.get(f"/api/v1/deadletters/{others}")
    gone = await vendor.get("/api/v1/deadletters/999999")
    assert r.status_code == gone.status_code == 404  # another vendor's reads like none
    assert r.text.replace(str(others), "ID") == gone.text.replace("999999", "ID")
    assert (await vendor.get(f"/api/v1/deadletters/{own[0]['id']}")).status_code == 200

    for role in ("department", "field"):
        r = await stored.client(role).get("/api/v1/deadletters")
        assert r.status_code == 403, role
        r = await stored.client(role).get(f"/api/v1/deadletters/{own[0]['id']}")
        assert r.status_code == 403, role
    assert (await stored.client(None).get("/api/v1/deadletters")).status_code == 401


async def test_unknown_dead_letter_is_404(stored: Api) -> None:
    r = await stored.client().get("/api/v1/deadletters/999999")
    assert r.status_code == 404 and "GET /api/v1/deadletters" in r.json()["detail"]
