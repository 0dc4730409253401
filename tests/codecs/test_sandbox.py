"""The sandbox a vendor's script runs in (docs/design.md §4a): nothing of the host to reach,
and a script that loops, allocates, recurses or throws costs one refused frame and leaves
the script decoding its good frames."""

from __future__ import annotations

import pytest

from cityiot.ingest.codecs.base import PayloadError
from cityiot.ingest.codecs.sandbox import PROBATION_CALLS, Script, ScriptError
from tests.codecs.frames import BATTERY_FRAME as BATTERY
from tests.codecs.frames import HOSTILE_FRAMES, HOSTILE_MEMORY_MB, codec

HOST_NAMES = (
    "require", "module", "exports", "process", "std", "os", "fetch", "XMLHttpRequest",
    "WebSocket", "setTimeout", "setInterval", "importScripts", "Deno", "Bun", "print",
    "scriptArgs", "__loadScript",
)  # fmt: skip


def reached(script: Script) -> dict[str, str]:
    result: dict[str, str] = script.call("decodeUplink", {"bytes": [], "fPort": 0})
    return result


def test_the_sandbox_has_nothing_of_the_host() -> None:
    fields = ", ".join(f"{name}: typeof {name}" for name in HOST_NAMES)
    probe = "function decodeUplink(input) { return {" + fields + "}; }"
    assert reached(Script("probe", "probe.js", probe)) == dict.fromkeys(HOST_NAMES, "undefined")


def test_no_module_is_ever_loaded() -> None:
    script = Script(
        "probe",
        "probe.js",
        """
        var outcome = "not settled";
        function decodeUplink(input) {
          if (input.fPort === 1) {
            import("os").then(
              function (os) { outcome = "loaded " + Object.keys(os).join(","); },
              function (error) { outcome = "refused: " + error.message; }
            );
          }
          return {outcome: outcome};
        }
        """,
    )
    assert script.call("decodeUplink", {"bytes": [], "fPort": 1}) == {"outcome": "not settled"}
    # The platform never runs the engine's job queue; were it run, the import is refused.
    while script._context.execute_pending_job():
        pass
    assert script.call("decodeUplink", {"bytes": [], "fPort": 0}) == {
        "outcome": "refused: could not load module 'os'"
    }


def test_the_console_prints_nothing_and_non_strict_es5_runs() -> None:
    script = Script(
        "es5",
        "es5.js",
        """
        function decodeUplink(input) {
          console.log("decoding", input.bytes.length);
          total = 0;                         // an undeclared global: sloppy mode
          with (Math) { total = max(input.bytes[0], input.bytes[1]); }
          var octal = 010;                   // legacy octal literal
          return {data: {total: total, octal: octal, port: arguments[0].fPort,
                         year: input.recvTime.getUTCFullYear()}};
        }
        """,
    )
    result = script.call("decodeUplink", {"bytes": [3, 9], "fPort": 5, "recvTime": 1763856000000})
    assert result == {"data": {"total": 9, "octal": 8, "port": 5, "year": 2025}}


def outcome(decoder: object, frame: bytes) -> str:
    """The codec's answer to ``frame``: its outputs, or the reason it refused it."""
    try:
        return repr(decoder.outputs(frame))  # type: ignore[attr-defined]
    except PayloadError as exc:
        return str(exc)


def test_a_loop_costs_one_full_limit_then_probation_while_good_frames_decode() -> None:
    looping = codec("hostile-loop", timeout_ms=40)
    script = looping.decoder
    assert script is not None
    full = "codec hostile-loop: hostile-loop.js ran over its time limit of 40 ms"
    short = (
        "codec hostile-loop: hostile-loop.js ran over 2 ms, its limit while on probation after "
        "running over its 40 ms limit"
    )
    assert outcome(looping, b"\x02").startswith(full)
    assert script.overruns == 1
    assert outcome(looping, BATTERY) == "[{'battery': 64}]"
    assert outcome(looping, b"\x02") == short
    assert outcome(looping, b"\x03") == short
    assert script.overruns == 3
    # Good frames within the short limit end the probation: the next loop has the full limit.
    for _ in range(PROBATION_CALLS):
        assert looping.outputs(BATTERY) == [{"battery": 64}]
    assert outcome(looping, b"\x02").startswith(full)
    assert outcome(looping, BATTERY) == "[{'battery': 64}]"


@pytest.mark.parametrize(
    "frame", [b"\x02", b"\x03"], ids=["small objects (QuickJS throws null)", "typed arrays"]
)
def test_out_of_memory_gives_a_fresh_context_and_the_next_frame_decodes(frame: bytes) -> None:
    allocating = codec("hostile-alloc", memory_bytes=8 << 20)
    script = allocating.decoder
    assert script is not None
    assert allocating.outputs(BATTERY) == [{"battery": 64, "decoded": 1}]
    assert allocating.outputs(BATTERY) == [{"battery": 64, "decoded": 2}]
    reason = outcome(allocating, frame)
    assert reason.startswith("codec hostile-alloc: hostile-alloc.js ")
    assert "ran out of its 8 MB memory cap" in reason
    assert script.fresh_contexts == 1
    # The script's source ran again in a fresh context: its global count starts over.
    assert allocating.outputs(BATTERY) == [{"battery": 64, "decoded": 1}]
    assert "8 MB memory cap" in outcome(allocating, frame)
    assert script.fresh_contexts == 2
    assert allocating.outputs(BATTERY) == [{"battery": 64, "decoded": 1}]


@pytest.mark.parametrize(("name", "frames"), list(HOSTILE_FRAMES.items()), ids=list(HOSTILE_FRAMES))
def test_a_hostile_frame_is_refused_with_its_reason_and_the_next_decodes(
    name: str, frames: list[tuple[bytes, str]]
) -> None:
    hostile = codec(name, memory_bytes=HOSTILE_MEMORY_MB << 20)
    for frame, reason in frames:
        said = outcome(hostile, frame)
        assert said.startswith(f"codec {name}: ")
        assert reason in said
        (output,) = hostile.outputs(BATTERY)
        assert output["battery"] == 64


def test_a_script_that_fails_at_load_says_so() -> None:
    with pytest.raises(ScriptError) as caught:
        Script("bad", "bad.js", "var x = ;")
    assert str(caught.value).startswith("codec bad: bad.js does not load: SyntaxError")
    with pytest.raises(ScriptError, match="codec spin: spin.js does not load: InternalError"):
        Script("spin", "spin.js", "while (true) {}", timeout_ms=20)
