"""The vendors' access standard pages: their tables match the kinds and the city in force."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cityiot.cli.accessdoc import BEGIN, END, PAGES, AccessDocError, refresh, rewrite
from cityiot.domain.catalogue import KINDS
from tests.operator_files import write_city, write_kind

DOCS = Path(__file__).resolve().parents[2] / "docs"
CITYIOT = str(Path(sys.executable).parent / "cityiot")


def docs_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CITYIOT, "docs", "access-standard", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_committed_pages_are_current() -> None:
    done = docs_command("--check", "--docs-dir", str(DOCS))
    assert done.returncode == 0, (
        f"{done.stderr}\nthe pages' tables differ from the kind and city files: run "
        "cityiot docs access-standard and commit docs/access-standard.*.md"
    )
    assert all(state.current for state in refresh(DOCS, write=False))


@pytest.mark.parametrize("name", sorted(PAGES.values()))
def test_every_kind_metric_and_attribute_is_on_the_page(name: str) -> None:
    text = (DOCS / name).read_text(encoding="utf-8")
    missing = [
        f"{kind.name}.{name}"
        for kind in KINDS.values()
        for name in [m.name for m in kind.metrics] + [a.name for a in kind.attributes]
        if f"`{name}`" not in text
    ]
    missing += [kind.name for kind in KINDS.values() if f"### `{kind.name}`" not in text]
    assert not missing, f"{name} does not list {', '.join(missing)}"


def test_check_names_the_stale_page_and_a_run_fixes_it(tmp_path: Path) -> None:
    for name in PAGES.values():
        shutil.copy(DOCS / name, tmp_path / name)
    stale = tmp_path / PAGES["zh"]
    stale.write_text(
        stale.read_text(encoding="utf-8").replace("| `tilt_deg` |", "| `tilt` |", 1),
        encoding="utf-8",
    )

    checked = docs_command("--check", "--docs-dir", str(tmp_path))
    assert checked.returncode == 1
    assert f"{stale} is stale" in checked.stderr
    assert PAGES["en"] not in checked.stderr

    written = docs_command("--docs-dir", str(tmp_path))
    assert written.returncode == 0, written.stderr
    assert written.stdout.split() == [str(stale)]
    assert stale.read_text(encoding="utf-8") == (DOCS / PAGES["zh"]).read_text(encoding="utf-8")
    assert docs_command("--check", "--docs-dir", str(tmp_path)).returncode == 0


def test_text_outside_the_markers_is_kept() -> None:
    page = f"# before\n\n{BEGIN}\nold table\n{END}\n\nafter\n"
    out = rewrite(page, "en")
    assert out.startswith(f"# before\n\n{BEGIN}\n") and out.endswith(f"{END}\n\nafter\n")
    assert "old table" not in out and "`tilt_deg`" in out
    assert rewrite(out, "en") == out


def test_a_page_without_markers_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AccessDocError, match="metrics:begin"):
        rewrite("# no tables here\n", "zh")
    (tmp_path / PAGES["zh"]).write_text("# no tables here\n", encoding="utf-8")
    (tmp_path / PAGES["en"]).write_text(f"{BEGIN}\n{END}\n", encoding="utf-8")
    done = docs_command("--docs-dir", str(tmp_path))
    assert done.returncode == 1
    assert "access-standard.zh.md needs exactly one" in done.stderr


def test_enum_metrics_show_their_values_and_hexframe_codes() -> None:
    zh = (DOCS / PAGES["zh"]).read_text(encoding="utf-8")
    en = (DOCS / PAGES["en"]).read_text(encoding="utf-8")
    gas = KINDS["gas"].metric("alarm_state")
    assert gas is not None and gas.type == "enum"
    values = ", ".join(f"`{v}`" for v in gas.values)
    assert f"| `alarm_state` | 报警状态 | alarm state | 枚举 | — | {values} | 5 |" in zh
    assert f"| alarm state | 报警状态 | {gas.description} | enum | — | {values} | 5 |" in en
    assert "### `gas` 燃气管网（town gas）" in zh and "hexframe 设备类型码 8" in zh
    assert "| `yicheng` | 驿城区 | Yicheng District |" in zh
    assert "| `yicheng` | Yicheng District | 驿城区 |" in en


def test_an_operators_kind_and_city_are_documented(tmp_path: Path) -> None:
    for name in PAGES.values():
        shutil.copy(DOCS / name, tmp_path / name)
    kinds, city = tmp_path / "kinds", write_city(tmp_path / "city")
    write_kind(kinds)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYIOT_")}
    env |= {"CITYIOT_KINDS_PATH": str(kinds), "CITYIOT_CITY_PATH": str(city)}
    done = subprocess.run(
        [CITYIOT, "docs", "access-standard", "--docs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    zh = (tmp_path / PAGES["zh"]).read_text(encoding="utf-8")
    en = (tmp_path / PAGES["en"]).read_text(encoding="utf-8")
    assert "### `noise` 环境噪声（environmental noise）" in zh
    assert "默认上报间隔 60 秒；不支持 hexframe（请用 JSON）。" in zh
    assert "| `laeq_db` | 等效声级 | equivalent level | 数值 | dB(A) | 20 … 140 | — |" in zh
    assert "| `period` | 时段 | period | 枚举 | — | `day`, `night` | — |" in zh
    assert "| `zone_class` | 声环境功能区 | noise zone class | 文本 | 是 |" in zh
    assert "| `microphones` | 传声器数量 | microphones | 整数 | 否 |" in zh
    assert "### `noise` — environmental noise (环境噪声)" in en
    assert "no hexframe codes (send JSON)" in en
    assert "信阳市的区县" in zh and "The districts of Xinyang" in en
    assert "| `shihe` | 浉河区 | Shihe District |" in zh
    assert "| `pingqiao` | Pingqiao District | 平桥区 |" in en
    assert "`yicheng`" not in zh.split(BEGIN)[1].split(END)[0]
    # The committed pages document the shipped model: these ones differ from it.
    assert docs_command("--check", "--docs-dir", str(tmp_path)).returncode == 1
