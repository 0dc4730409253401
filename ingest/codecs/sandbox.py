"""A vendor's JavaScript, run in a sandbox: QuickJS, one context per script, limits per call.

The engine is QuickJS through ``quickjs-ng`` (the maintained line of Fabrice Bellard's
small embeddable engine): ES2023 in a few hundred kilobytes, non-strict code as vendors
write it, an interrupt checked while code runs (the time limit) and an allocator limit (the
memory cap). V8 (``mini-racer``) was measured too: 190 µs a call against QuickJS's 6 µs for
a ten-byte frame, most of it crossing into V8's own thread — too much for a codec that runs
once per message.

What a script can reach: the language's own objects and a ``console`` that prints nothing.
No file, network, timer or process API exists in the context, ``import`` finds no module,
and each script has its own context, so one vendor's globals never meet another's.

Limits (docs/design.md §4a): every call runs at most ``timeout_ms`` of CPU time (QuickJS
counts the process's) and within
``memory_bytes`` of the script's heap, with a bounded stack. A script that ran over its time
is on *probation*: its next calls have ``PROBATION_SHARE`` of the limit until it has run
``PROBATION_CALLS`` calls within it, so a frame that makes it loop forever costs the intake
a few milliseconds each time, not the whole limit, while its other frames still decode. A
script that ran out of memory gets a fresh context (its source run again).

What the limit cannot do: QuickJS looks at the clock about every 10,000 steps of a script, and
a call into a built-in (``join``, ``repeat``, ``indexOf``) runs to its end. A loop whose every
step is such a call on a large value (``new Array(100000).join('x')``) runs for seconds before
it is stopped. A decoder reviewed before it is put (the examples prove what it decodes; only
an admin may put one) does not do this; a watchdog that could stop it needs the script in
another thread or process.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import quickjs

from cityiot.ingest.codecs.base import PayloadError

PROBATION_SHARE = 0.02  # of the time limit, at least PROBATION_MIN_S
PROBATION_MIN_S = 0.002
PROBATION_CALLS = 1000  # calls within the short limit that end probation
MAX_RESULT_CHARS = 1 << 20  # a result's JSON; more is refused as a result too large
STACK_BYTES = 256 * 1024

# Runs before the vendor's script: what vendors' scripts use and the sandbox lacks, and the
# one entry point the platform calls (the input and the result cross as JSON text).
_PRELUDE = """
var console = (function () {
  function quiet() {}
  return {log: quiet, info: quiet, warn: quiet, error: quiet, debug: quiet, trace: quiet};
})();
function __cityiot_call(name, text) {
  var input = JSON.parse(text);
  if (input.recvTime !== undefined) input.recvTime = new Date(input.recvTime);
  var fn = globalThis[name];
  if (typeof fn !== "function") throw new Error(name + " is not defined by the script");
  var out = fn(input);
  return out === undefined ? "null" : JSON.stringify(out);
}
"""


class ScriptError(PayloadError):
    """The script failed: it threw, ran over its time or memory, or returned no JSON; the
    message is the reason a dead letter carries."""


class Script:
    """One vendor script (``file_name`` of codec ``codec``) in a context of its own."""

    def __init__(
        self,
        codec: str,
        file_name: str,
        source: str,
        *,
        timeout_ms: float = 100,
        memory_bytes: int = 32 << 20,
    ) -> None:
        self.codec = codec
        self.file_name = file_name
        self.source = source
        self.timeout_s = timeout_ms / 1000
        self.memory_bytes = memory_bytes
        self.short_s = max(PROBATION_MIN_S, self.timeout_s * PROBATION_SHARE)
        self.calls = 0
        self.overruns = 0
        self.fresh_contexts = 0
        self._probation = 0  # calls left on the short limit
        self._context = self._new_context()

    def _new_context(self) -> Any:
        context = quickjs.Context()
        context.set_memory_limit(self.memory_bytes)
        context.set_max_stack_size(STACK_BYTES)
        context.set_time_limit(self.timeout_s)
        context.eval(_PRELUDE)
        try:
            context.eval(self.source)
        except quickjs.JSException as exc:
            raise ScriptError(
                f"codec {self.codec}: {self.file_name} does not load: {_first_line(exc)}"
            ) from None
        self._call = context.get("__cityiot_call")
        return context

    def defines(self, function: str) -> bool:
        """Whether the script defines ``function`` (``decodeUplink``, ``encodeDownlink``)."""
        return bool(self._context.eval(f"typeof globalThis.{function} === 'function'"))

    def call(self, function: str, argument: Any) -> Any:
        """``function(argument)`` in the sandbox, the result as Python values; raises
        :class:`ScriptError` with the reason when the script fails."""
        return self.call_json(function, orjson.dumps(argument).decode())

    def call_json(self, function: str, argument: str) -> Any:
        """As :meth:`call`, with the argument already JSON text (the hot path makes it)."""
        self.calls += 1
        on_probation = self._probation > 0
        started = time.perf_counter()
        try:
            text = self._call(function, argument)
        except quickjs.StackOverflow:
            raise ScriptError(self._why("overflowed its stack (endless recursion?)")) from None
        except quickjs.JSException as exc:
            message = _first_line(exc)
            if message == "InternalError: interrupted":
                raise ScriptError(self._overran(started, on_probation)) from None
            if message == "InternalError: out of memory":
                self._renew()
                raise ScriptError(
                    self._why(f"ran out of its {self.memory_bytes >> 20} MB memory cap")
                ) from None
            if message == "null":
                # What QuickJS throws when it runs out of memory making the error itself
                # (a script filling its heap with small objects); a script's own `throw
                # null` looks the same, and a fresh context costs it nothing.
                self._renew()
                raise ScriptError(
                    self._why(
                        f"threw null: it ran out of its {self.memory_bytes >> 20} MB memory "
                        "cap (or threw null itself)"
                    )
                ) from None
            raise ScriptError(self._why(f"threw {message}")) from None
        if on_probation:
            self._probation -= 1
            if self._probation == 0:
                self._context.set_time_limit(self.timeout_s)
        if not isinstance(text, str):
            raise ScriptError(self._why("returned something that is not JSON"))
        if len(text) > MAX_RESULT_CHARS:
            raise ScriptError(self._why(f"returned {len(text)} characters of JSON, over 1 MiB"))
        return orjson.loads(text)

    def _why(self, what: str) -> str:
        return f"codec {self.codec}: {self.file_name} {what}"

    def _overran(self, started: float, on_probation: bool) -> str:
        self.overruns += 1
        spent_ms = (time.perf_counter() - started) * 1000
        if on_probation:
            why = (
                f"ran over {self.short_s * 1000:g} ms, its limit while on probation after "
                f"running over its {self.timeout_s * 1000:g} ms limit"
            )
        else:
            why = (
                f"ran over its time limit of {self.timeout_s * 1000:g} ms "
                f"(of CPU time; stopped after {spent_ms:.0f} ms; CITYIOT_CODEC_TIMEOUT_MS)"
            )
        self._probation = PROBATION_CALLS
        self._context.set_time_limit(self.short_s)
        return self._why(why)

    def _renew(self) -> None:
        """A fresh context: a script that ran out of memory may have filled its globals."""
        self.fresh_contexts += 1
        self._context = self._new_context()
        if self._probation:
            self._context.set_time_limit(self.short_s)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
