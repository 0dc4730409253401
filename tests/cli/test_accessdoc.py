"""The vendors' access standard pages: their metric tables match the catalogue."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cityiot.cli.accessdoc import BEGIN, END, PAGES, AccessDocError, refresh, rewrite
from cityiot.domain.catalogue import KINDS

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
        f"{done.stderr}\nthe pages' tables differ from cityiot/domain/catalogue.py: run "
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
