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
