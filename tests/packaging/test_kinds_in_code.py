"""Everything follows the model: no kind is named in the platform's code.

Kinds are data (docs/design.md §4a): the shipped kind files, ``CITYIOT_KINDS_PATH`` and
``PUT /kinds``. A kind id written as a string in Python or in the console's scripts would
treat that kind apart from one an operator adds, so none may be, except in an API
example (OpenAPI documentation shows a realistic value) or a docstring.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from cityiot.domain.catalogue import SHIPPED_KINDS
from tests.packaging.layout import package_dirs

KIND_IDS = frozenset(p.stem for p in SHIPPED_KINDS.glob("*.yaml"))
# Keyword arguments and keys whose values only document the API.
EXAMPLE_KEYWORDS = frozenset(
    {"example", "examples", "openapi_examples", "json_schema_extra", "tags"}
)


def _documentation(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Whether the string ``node`` is a docstring or sits in an API example."""
    child, parent = node, parents.get(node)
    if isinstance(parent, ast.Expr):
        return True  # a docstring or a bare string statement
    while parent is not None:
        if isinstance(parent, ast.keyword) and parent.arg in EXAMPLE_KEYWORDS:
            return True
        if isinstance(parent, ast.Dict) and child in parent.values:
            key = parent.keys[parent.values.index(child)]  # type: ignore[arg-type]
            if isinstance(key, ast.Constant) and key.value in EXAMPLE_KEYWORDS:
                return True
        if isinstance(parent, ast.Assign | ast.AnnAssign):
            targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
            if any(isinstance(t, ast.Name) and "EXAMPLE" in t.id.upper() for t in targets):
                return True
        child, parent = parent, parents.get(parent)
    del child
    return False


def kind_names_in(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    return [
        f"{path}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and node.value in KIND_IDS
        and not _documentation(node, parents)
    ]


def test_no_python_module_names_a_kind() -> None:
    found = [
        hit
        for folder in sorted(set(package_dirs().values()))
        for path in sorted(folder.glob("*.py"))
        for hit in kind_names_in(path)
    ]
    assert not found, "kinds named in code (take them from the model):\n" + "\n".join(found)


def test_the_console_names_no_kind() -> None:
    names = "|".join(sorted(KIND_IDS))
    pattern = re.compile(r"""(["'`])(""" + names + r""")\1""")
    console = next(d for p, d in package_dirs().items() if p.endswith("api.console"))
    found = [
        f"{path}:{n}: {line.strip()}"
        for path in sorted((console / "static").glob("*.js"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, "kinds named in the console (take them from its catalogue):\n" + "\n".join(
        found
    )
