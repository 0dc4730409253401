"""Files an operator writes (docs/kinds.en.md): a kind of their own and another city, and
the model running with them for the length of a block."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from cityiot.domain.catalogue import MODEL

# The noise kind of docs/design.md §4a, with an integer attribute besides (every attribute
# type once).
NOISE: dict[str, Any] = {
    "kind": "noise",
    "title": {"zh": "环境噪声", "en": "environmental noise"},
    "report_interval_s": 60,
    "metrics": {
        "laeq_db": {
            "type": "float",
            "unit": "dB(A)",
            "range": [20, 140],
            "title": {"zh": "等效声级", "en": "equivalent level"},
        },
        "alarm": {"type": "bool", "title": {"zh": "超标报警", "en": "limit alarm"}},
        "period": {
            "type": "enum",
            "values": ["day", "night"],
            "title": {"zh": "时段", "en": "period"},
        },
    },
    "attributes": {
        "limit_db": {"type": "float", "title": {"zh": "限值", "en": "limit"}},
        "zone_class": {
            "type": "str",
            "required": True,
            "title": {"zh": "声环境功能区", "en": "noise zone class"},
        },
        "microphones": {"type": "int", "title": {"zh": "传声器数量", "en": "microphones"}},
    },
}


def changed(path: str, value: Any, spec: dict[str, Any] = NOISE) -> dict[str, Any]:
    """A copy of ``spec`` with the field at the dotted ``path`` set to ``value`` (None
    deletes it): a test's variant of the operator's kind."""
    out = copy.deepcopy(spec)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return out


# Another city with two districts (CITYIOT_CITY_PATH).
XINYANG = """\
name: {zh: 信阳市, en: Xinyang}
timezone: Asia/Shanghai
center: [32.13, 114.07]
districts:
  shihe: {zh: 浉河区, en: Shihe District}
  pingqiao: {zh: 平桥区, en: Pingqiao District}
"""
XINYANG_DISTRICTS = ("shihe", "pingqiao")


def write_kind(folder: Path, spec: dict[str, Any] = NOISE) -> Path:
    """``spec`` as the kind file ``{kind}.yaml`` in ``folder`` (made if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec['kind']}.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def write_city(folder: Path, text: str = XINYANG) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "city.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@contextlib.contextmanager
def model(kinds_path: Path | None = None, city_path: Path | None = None) -> Iterator[None]:
    """The process's model with ``kinds_path`` and ``city_path`` for the block, then the
    shipped one again."""
    MODEL.configure(kinds_path, city_path)
    try:
        yield
    finally:
        MODEL.configure(None, None)


def run_cli(
    *args: str, env: dict[str, str], stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``cityiot ARGS`` as an operator runs it, with ``env`` over this process's environment
    (and ``stdin`` on its standard input, ``cwd`` its folder)."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "cityiot"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        input=stdin,
        cwd=cwd,
    )


async def keys_cli(folder: Path, *args: str) -> tuple[int, str, str]:
    """``cityiot keys ARGS`` on a SQLite registry in ``folder`` (its run dir and working
    folder), off the event loop: exit code, stdout, and stderr with its line wrapping undone."""
    env = {
        "CITYIOT_DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'keys.db'}",
        "CITYIOT_RUN_DIR": str(folder),
    }
    done = await asyncio.to_thread(run_cli, "keys", *args, env=env, cwd=folder)
    return done.returncode, done.stdout, " ".join(done.stderr.split())
