"""A codec's ``metrics`` mapping: each of the kind's metrics as an expression over what the
decoder gave (or the vendor's JSON) and the device's registry attributes.

A name resolves to an output field first, then to the device's attribute; ``battery.level``
reaches into a nested object of the output. A metric whose expression names a field that is
absent is left out of the reading (a frame type that does not carry it). Without a mapping
the output's fields are the metrics, by name. The output fields ``ts`` (epoch ms or RFC 3339),
``seq`` (integer) and ``kind`` (checked against the device's) are the reading's own, never
metrics (docs/design.md §4a); a mapping may compute ``ts`` and ``seq`` too (``ts: time`` for
a vendor whose JSON names its time otherwise), which then stand over the output's.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

from cityiot.domain.expressions import (
    ALLOWED_NODES,
    NO_BUILTINS,
    ExpressionError,
    parse_expression,
)
from cityiot.ingest.codecs.base import PayloadError

RESERVED = frozenset({"ts", "seq", "kind"})
# Entries of a mapping that give the reading's own time and seq rather than a metric (for a
# vendor whose JSON names its time otherwise: ``ts: time``).
OWN = frozenset({"ts", "seq"})
_SEP = "__"  # a.b is read as the flat name a__b


class _Flatten(ast.NodeTransformer):
    """``a.b.c`` → the name ``a__b__c`` (the output is flattened the same way)."""

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        parts = [node.attr]
        inner: ast.AST = node.value
        while isinstance(inner, ast.Attribute):
            parts.append(inner.attr)
            inner = inner.value
        if not isinstance(inner, ast.Name):
            raise ExpressionError("only names may be followed by .field")
        parts.append(inner.id)
        return ast.copy_location(ast.Name(_SEP.join(reversed(parts)), ast.Load()), node)


class MetricMapping:
    """The compiled ``metrics`` of codec ``codec`` (None: the output's fields by name)."""

    def __init__(self, codec: str, metrics: Mapping[str, str] | None, where: str) -> None:
        self.codec = codec
        self.texts = dict(metrics or {})
        self.passthrough = metrics is None
        self.nested = False
        self._codes: list[tuple[str, Any]] = []
        for metric, text in self.texts.items():
            at = f"{where}: metrics.{metric}"
            try:
                tree = parse_expression(
                    text, at, "codec mappings", allowed=(*ALLOWED_NODES, ast.Attribute)
                )
                if any(isinstance(n, ast.Attribute) for n in ast.walk(tree)):
                    self.nested = True
                    tree = ast.fix_missing_locations(_Flatten().visit(tree))
            except ExpressionError as exc:
                text_ = str(exc) if str(exc).startswith(at) else f"{at}: {exc}"
                raise ExpressionError(text_) from None
            self._codes.append((metric, compile(tree, f"<{at}>", "eval")))

    def apply(
        self, output: Mapping[str, Any], attributes: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The metrics of one output object for a device with ``attributes``, and the
        reading's own ``ts``/``seq`` where the mapping computes them."""
        if self.passthrough:
            return {k: v for k, v in output.items() if k not in RESERVED}, {}
        values = {**attributes, **(flatten(output) if self.nested else output)}
        metrics: dict[str, Any] = {}
        own: dict[str, Any] = {}
        for metric, code in self._codes:
            try:
                value = eval(code, NO_BUILTINS, values)  # noqa: S307 - AST whitelisted
            except NameError:
                continue  # a field this frame does not carry: the metric is left out
            except (ArithmeticError, TypeError) as exc:
                raise PayloadError(
                    f"codec {self.codec}: metrics.{metric} ({self.texts[metric]}) cannot be "
                    f"computed from this output: {exc}"
                ) from None
            (own if metric in OWN else metrics)[metric] = value
        return metrics, own


def flatten(output: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a": {"b": 1}, "a__b": 1}``: nested fields by flat name."""
    flat: dict[str, Any] = {}
    for key, value in output.items():
        name = f"{prefix}{key}"
        flat[name] = value
        if isinstance(value, dict):
            flat.update(flatten(value, name + _SEP))
    return flat
