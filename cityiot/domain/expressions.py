"""The small expression language of rules and codec mappings, parsed once and checked.

Numbers, ``true``/``false``, strings, names, ``+ - * /``, comparisons, ``and``/``or``/``not``
and parentheses; nothing else (no calls, no attribute access, no subscripts), so an
expression can only compute with the values it is given. Rules check the names against a
kind (:mod:`cityiot.rules.definitions`); a codec's mapping resolves them against the
decoder's output and the device's attributes (:mod:`cityiot.ingest.codecs.mapping`).
"""

from __future__ import annotations

import ast
import re
from typing import Any

ALLOWED_NODES = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
    ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Compare, ast.Lt, ast.LtE, ast.Gt,
    ast.GtE, ast.Eq, ast.NotEq, ast.Name, ast.Load, ast.Constant,
)  # fmt: skip

NO_BUILTINS: dict[str, Any] = {"__builtins__": {}}  # an expression's globals: nothing


class ExpressionError(ValueError):
    """An expression is not in the language; the message names where it is and what to write."""


def parse_expression(
    text: str, where: str, users: str = "rules", allowed: tuple[type, ...] = ALLOWED_NODES
) -> ast.Expression:
    """``text`` parsed, ``true``/``false`` read as Python's, every node of the language;
    raises :class:`ExpressionError` naming ``where`` and the construct that is not."""
    source = re.sub(r"\bfalse\b", "False", re.sub(r"\btrue\b", "True", str(text)))
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"{where}: {text!r} is not a valid expression ({exc.msg})") from None
    for node in ast.walk(tree):
        if not isinstance(node, allowed):
            raise ExpressionError(
                f"{where}: {text!r} uses {type(node).__name__}, which {users} do not allow "
                "(use metrics, attributes, numbers, + - * /, comparisons, and/or/not)"
            )
        if isinstance(node, ast.Constant) and not isinstance(node.value, int | float | bool | str):
            raise ExpressionError(f"{where}: {text!r}: only numbers, true/false and strings")
    return tree


_FLIPPED = {ast.Lt: ">", ast.LtE: ">=", ast.Gt: "<", ast.GtE: "<=", ast.Eq: "==", ast.NotEq: "!="}
_OPERATORS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}


def thresholds(text: str) -> list[tuple[str, str, float]]:
    """The fixed limits an expression compares a name with: ``(name, operator, number)`` for
    each ``name OP number`` (or ``number OP name``, turned round), in the order written.
    ``tilt_deg > 15 or water_level_cm > 0.8 * depth_cm`` → ``[("tilt_deg", ">", 15.0)]``: a
    limit that depends on an attribute is not a fixed line. An expression not in the language
    has none."""
    try:
        tree = parse_expression(text, "thresholds")
    except ExpressionError:
        return []
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            pair = _limit(left, op, right)
            if pair is not None:
                found.append(pair)
            left = right
    return found


def _limit(left: ast.expr, op: ast.cmpop, right: ast.expr) -> tuple[str, str, float] | None:
    number = _number(right)
    if isinstance(left, ast.Name) and number is not None:
        return left.id, _OPERATORS[type(op)], number
    number = _number(left)
    if isinstance(right, ast.Name) and number is not None:
        return right.id, _FLIPPED[type(op)], number
    return None


def _number(node: ast.expr) -> float | None:
    """A literal number, signed or not; None for anything else (true/false are not numbers)."""
    sign = 1.0
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
        node = node.operand
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, bool):
            return None
        return sign * float(node.value)
    return None
