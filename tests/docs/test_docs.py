"""The docs stay true to the repository: the README is a short front page, every page the
docs index promises exists, every relative link (and anchor) resolves, every Prometheus metric
and every setting the code defines is in docs/deployment.md, the design page keeps the design
card's numbering, and the benchmark's JSON parses and agrees with the pages that quote it.

The code is read, never imported: these checks hold whatever package the modules live in.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
DEPLOYMENT = DOCS / "deployment.md"
RESULTS = DOCS / "benchmark" / "results.json"
README_MAX_LINES = 300

# Every page the docs promise (issue 23), relative to the repository root.
PAGES = (
    "README.md",
    "CHANGELOG.md",
    "docs/README.md",
    "docs/access-standard.zh.md",
    "docs/access-standard.en.md",
    "docs/operators-guide.zh.md",
    "docs/operators-guide.en.md",
    "docs/kinds.zh.md",
    "docs/kinds.en.md",
    "docs/api.md",
    "docs/rules.md",
    "docs/deployment.md",
    "docs/guarantees.md",
    "docs/scale-out.md",
    "docs/benchmark.md",
    "docs/benchmark/results.json",
    "docs/design.md",
    "docs/security.md",
)

# The design card's sections, in order: "DESIGN §N" in code and docs means docs/design.md §N.
DESIGN_SECTIONS = ("1", "2", "3", "4", "4a", "5", "6", "7", "8", "9", "10")

# Folders holding the platform's Python code (the stages' folders map into cityiot.*).
CODE_DIRS = ("cityiot", "ingest", "rules", "api", "simulators")


def markdown_files() -> list[Path]:
    """The Markdown whose links are checked."""
    files = [README, ROOT / "CHANGELOG.md", ROOT / "deploy" / "README.md", *DOCS.glob("*.md")]
    return [f for f in files if f.exists()]


# -- Markdown: links and headings ---------------------------------------------------------

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of everything outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def links(path: Path) -> Iterator[tuple[int, str]]:
    """(line, target) of every inline link and image outside code."""
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for match in _LINK.finditer(_INLINE_CODE.sub("", line)):
            yield number, match.group(1)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower case, punctuation dropped,
    spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links → their text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / unquote(file_part)).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not resolved.exists():
            problems.append(f"{where}: no such file")
        elif anchor and resolved.suffix == ".md" and unquote(anchor) not in anchors(resolved):
            problems.append(f"{where}: no heading with the anchor #{unquote(anchor)}")
    return problems


def test_the_readme_is_a_short_front_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; keep it at most {README_MAX_LINES} and move "
        "reference material into docs/"
    )


@pytest.mark.parametrize("page", PAGES)
def test_every_promised_page_exists(page: str) -> None:
    assert (ROOT / page).is_file(), f"{page} is missing"


def test_the_docs_index_lists_every_page() -> None:
    index = DOCS / "README.md"
    listed = {(index.parent / unquote(t.partition("#")[0])).resolve() for _, t in links(index)}
    missing = [
        str(page.relative_to(ROOT))
        for page in [*DOCS.glob("*.md"), RESULTS]
        if page != index and page.resolve() not in listed
    ]
    assert not missing, f"docs/README.md does not list: {', '.join(missing)}"


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    problems = broken_links(page)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_links_and_anchors_are_really_checked(tmp_path: Path) -> None:
    """The checker itself: a missing file and a missing anchor are both caught."""
    (tmp_path / "a.md").write_text(
        "# Title\n\n## Two words — and `code`\n\n[ok](#two-words--and-code) [ok](b.md#b-heading)\n"
        "[bad](#nothing) [bad](c.md) [bad](b.md#nope) `[not a link](x.md)`\n"
        "```\n[in code](y.md)\n```\n",
        encoding="utf-8",
    )
    (tmp_path / "b.md").write_text("## B heading\n", encoding="utf-8")
    problems = broken_links(tmp_path / "a.md", root=tmp_path)
    assert len(problems) == 3, problems
    assert [p.rsplit(": ", 1)[1] for p in problems] == [
        "no heading with the anchor #nothing",
        "no such file",
        "no heading with the anchor #nope",
    ]


# -- The design page ------------------------------------------------------------------------


def test_the_design_page_is_numbered_like_the_design_card() -> None:
    text = (DOCS / "design.md").read_text(encoding="utf-8")
    numbers = re.findall(r"(?m)^## §(\d+a?)\b", text)
    assert tuple(numbers) == DESIGN_SECTIONS, (
        f"docs/design.md's sections are {numbers}; they must be §1 … §10 with §4a, in order, "
        "so that 'DESIGN §N' points to docs/design.md §N"
    )


# -- The code, read as syntax trees --------------------------------------------------------


@dataclass
class Code:
    modules: dict[Path, ast.Module] = field(default_factory=dict)

    @classmethod
    def read(cls) -> Code:
        code = cls()
        for folder in CODE_DIRS:
            for path in sorted((ROOT / folder).rglob("*.py")):
                code.modules[path] = ast.parse(path.read_text(encoding="utf-8"), str(path))
        assert code.modules, f"no Python code found under {CODE_DIRS}"
        return code

    def walk(self) -> Iterator[tuple[Path, ast.AST]]:
        for path, module in self.modules.items():
            for node in ast.walk(module):
                yield path, node

    def classes(self, name: str) -> list[ast.ClassDef]:
        return [n for _, n in self.walk() if isinstance(n, ast.ClassDef) and n.name == name]

    def functions(self, qualified: str) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
        """Functions named ``name``, or ``Class.name`` for a method of that class."""
        owner, _, name = qualified.rpartition(".")
        scopes: list[ast.AST] = [*self.classes(owner)] if owner else [*self.modules.values()]
        found = []
        for scope in scopes:
            for node in ast.walk(scope):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
                    found.append(node)
        return found

    def constant(self, path: Path, name: str) -> str | None:
        """The value of a module-level ``NAME = "text"`` of that module."""
        for node in self.modules[path].body:
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                return node.value.value
        return None


def _callee(call: ast.Call) -> str:
    func = call.func
    return (
        func.id
        if isinstance(func, ast.Name)
        else func.attr
        if isinstance(func, ast.Attribute)
        else ""
    )


def _text(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


# prometheus_client's instruments: the name as scraped gets this suffix.
INSTRUMENTS = {"Counter": "_total", "Gauge": "", "Histogram": "", "Summary": "", "Info": "_info"}
FAMILIES = {"CounterMetricFamily": "_total", "GaugeMetricFamily": ""}


def instrument_names(code: Code) -> set[str]:
    """Metrics made with prometheus_client's constructors: ``Counter("http_requests", …,
    namespace=NAMESPACE)`` → ``cityiot_http_requests_total``; ``GaugeMetricFamily(
    f"{NAMESPACE}_stage_source_up", …)`` → ``cityiot_stage_source_up``. Names built at scrape
    time from other values are the stages' (:func:`stage_names`)."""
    names = set()
    for path, node in code.walk():
        if not isinstance(node, ast.Call) or not node.args:
            continue
        kind = _callee(node)
        if kind in INSTRUMENTS:
            name = _text(node.args[0])
            keywords = {k.arg: k.value for k in node.keywords}
            namespace = keywords.get("namespace")
            prefix = _text(namespace)
            if prefix is None and isinstance(namespace, ast.Name):
                prefix = code.constant(path, namespace.id)
            if name is None or (prefix is None and not name.startswith("cityiot_")):
                continue  # collections.Counter() and friends
            full = f"{prefix}_{name}" if prefix else name
        elif kind in FAMILIES:
            first = node.args[0]
            if isinstance(first, ast.JoinedStr):
                parts = []
                for value in first.values:
                    if isinstance(value, ast.Constant):
                        parts.append(str(value.value))
                    elif isinstance(value, ast.FormattedValue) and isinstance(
                        value.value, ast.Name
                    ):
                        parts.append(code.constant(path, value.value.id) or "\0")
                    else:
                        parts.append("\0")
                full = "".join(parts)
                if "\0" in full:
                    continue  # made from a stage's own names
            else:
                full = _text(first) or ""
            if not full.startswith("cityiot_"):
                continue
            kind_suffix = FAMILIES[kind]
            names.add(full if full.endswith(kind_suffix) else full + kind_suffix)
            continue
        else:
            continue
        suffix = INSTRUMENTS[kind]
        names.add(full if full.endswith(suffix) else full + suffix)
    return names


# A stage's counters reach /metrics as cityiot_<stage>_<name> (api/metrics.py: a source per
# stage, read at scrape time). Where each stage's names come from: counters dataclasses (an
# int field is a counter, <field>_total; a float a gauge; a dict or Counter a labelled
# counter; bool and str fields are left out) and functions returning {name: value}.
STAGE_SOURCES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ingest": (("IngestCounters",), ()),
    "broker": (("LinkStats",), ()),
    "rules": (("RulesCounters",), ()),
    "delivery": (("DeliveryCounters",), ()),
    "partition": (("PartitionCounters",), ()),
    "queue": ((), ("depths", "queue")),
    "api_edge": (("EdgeCounters",), ("_edge_source",)),
    "api_stream": ((), ("StreamHub.metrics",)),
    "api_denials": ((), ("DenialCounters.metrics",)),
}


def registered_stages(code: Code) -> set[str]:
    """Stage names the code registers a metrics source under: ``add_source(ctx, "stage", …)``,
    a dict literal holding ``"stage": counters_source(…)``, ``sources["stage"] = …``."""
    stages = set()
    for _, node in code.walk():
        if isinstance(node, ast.Call) and _callee(node) == "add_source" and len(node.args) >= 2:
            if (name := _text(node.args[1])) is not None:
                stages.add(name)
        elif isinstance(node, ast.Dict) and any(
            isinstance(v, ast.Call) and _callee(v) == "counters_source" for v in node.values
        ):
            stages.update(t for k in node.keys if (t := _text(k)) is not None)
        elif (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and _callee(node.value) == "counters_source"
        ):
            for target in node.targets:
                if isinstance(target, ast.Subscript) and (name := _text(target.slice)):
                    stages.add(name)
    return stages


def _field_metric(name: str, annotation: str) -> str | None:
    if annotation == "int":
        return f"{name}_total"
    if annotation == "float":
        return name
    if annotation in ("bool", "str"):
        return None
    if re.match(r"^(collections\.)?(Counter|dict|Dict|defaultdict)\b", annotation):
        return f"{name}_total"
    raise AssertionError(f"a counters field {name}: {annotation} — teach tests/docs its metric")


def stage_names(
    code: Code, sources: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = STAGE_SOURCES
) -> set[str]:
    names: set[str] = set()
    for stage, (classes, functions) in sources.items():
        keys: set[str] = set()
        for class_name in classes:
            found = code.classes(class_name)
            assert found, (
                f"class {class_name} (metrics of stage {stage!r}) is gone: update STAGE_SOURCES"
            )
            for statement in found[0].body:
                if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                    metric = _field_metric(statement.target.id, ast.unparse(statement.annotation))
                    if metric is not None:
                        keys.add(metric)
        for function_name in functions:
            found_functions = code.functions(function_name)
            assert found_functions, (
                f"function {function_name} (metrics of stage {stage!r}) is gone: update STAGE_SOURCES"
            )
            for function in found_functions:
                for node in ast.walk(function):
                    if isinstance(node, ast.Dict):
                        keys.update(t for k in node.keys if (t := _text(k)) is not None)
                    elif isinstance(node, ast.Assign):
                        for target in node.targets:
                            if isinstance(target, ast.Subscript) and (t := _text(target.slice)):
                                keys.add(t)
        names.update(f"cityiot_{stage}_{re.sub(r'[^a-zA-Z0-9_]', '_', key)}" for key in keys)
    return names


def test_the_metric_reader_finds_what_a_scrape_would_show() -> None:
    """The reader itself, on code of its own: instruments with a namespace, literal names,
    families, counters dataclasses and a source function; nothing from collections.Counter."""
    source = """
NAMESPACE = "cityiot"

class WidgetCounters:
    made: int = 0
    last_ms: float = 0.0
    made_by_kind: Counter[str] = field(default_factory=Counter)
    connected: bool = False
    last_error: str = ""

class Hub:
    def metrics(self):
        return {"subscribers": 1, "restarts_total": 2, **({"spool_bytes": 3} if x else {})}

def wire(ctx):
    Counter("widgets", "doc", ["kind"], namespace=NAMESPACE)
    Histogram("cityiot_wait_seconds", "doc")
    GaugeMetricFamily(f"{NAMESPACE}_up", "doc")
    CounterMetricFamily(f"{NAMESPACE}_{stage}_{name}", "doc")
    collections.Counter("not a metric")
    add_source(ctx, "widget", counters_source(x.counters))
    add_source(ctx, "hub", ctx.hub.metrics)
"""
    code = Code({Path("fake.py"): ast.parse(source)})
    assert instrument_names(code) == {
        "cityiot_widgets_total",
        "cityiot_wait_seconds",
        "cityiot_up",
    }
    assert registered_stages(code) == {"widget", "hub"}
    assert stage_names(
        code, {"widget": (("WidgetCounters",), ()), "hub": ((), ("Hub.metrics",))}
    ) == {
        "cityiot_widget_made_total",
        "cityiot_widget_last_ms",
        "cityiot_widget_made_by_kind_total",
        "cityiot_hub_subscribers",
        "cityiot_hub_restarts_total",
        "cityiot_hub_spool_bytes",
    }


@pytest.fixture(scope="module")
def code() -> Code:
    return Code.read()


def test_every_metrics_stage_is_known_here(code: Code) -> None:
    unknown = registered_stages(code) - set(STAGE_SOURCES)
    assert not unknown, (
        f"metrics stages {sorted(unknown)} are registered in the code but unknown to "
        "tests/docs/test_docs.py: add them to STAGE_SOURCES, and their metrics to docs/deployment.md"
    )


def test_every_metric_the_code_defines_is_in_the_deployment_page(code: Code) -> None:
    names = instrument_names(code) | stage_names(code)
    # The reader must find something, or this test proves nothing.
    assert {"cityiot_http_requests_total", "cityiot_stage_source_up"} <= names
    assert {"cityiot_ingest_messages_total", "cityiot_ingest_last_write_ms"} <= names
    page = DEPLOYMENT.read_text(encoding="utf-8")
    listed = set(re.findall(r"\bcityiot_[a-z0-9_]+", page))
    missing = sorted(names - listed)
    assert not missing, (
        "metrics defined in the code but not in docs/deployment.md (Prometheus metrics): "
        + ", ".join(missing)
    )


def test_every_setting_is_in_the_deployment_page(code: Code) -> None:
    settings = [
        c
        for c in code.classes("Settings")
        if any(ast.unparse(b).endswith("BaseSettings") for b in c.bases)
    ]
    assert settings, "no Settings(BaseSettings) class found"
    fields = [
        s.target.id
        for s in settings[0].body
        if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
    ]
    assert "mqtt_url" in fields
    page = DEPLOYMENT.read_text(encoding="utf-8")
    missing = [f"CITYIOT_{f.upper()}" for f in fields if f"CITYIOT_{f.upper()}" not in page]
    assert not missing, "settings missing from docs/deployment.md (Configuration): " + ", ".join(
        missing
    )


# -- The benchmark's figures ----------------------------------------------------------------


def test_the_benchmark_results_parse_and_agree_with_the_pages() -> None:
    results = json.loads(RESULTS.read_text(encoding="utf-8"))
    for key in ("date", "commit", "machine", "settings", "systems", "rows", "latency"):
        assert key in results, f"docs/benchmark/results.json has no {key!r}"
    systems = results["systems"]
    for name, row in results["rows"].items():
        assert "unit" in row, f"row {name} has no unit"
        assert set(row["values"]) == set(systems), f"row {name} does not cover every system"
    qos0 = results["rows"]["readings_per_s_stored"]["values"]["cityiot-qos0"]
    benchmark = (DOCS / "benchmark.md").read_text(encoding="utf-8")
    for page, text in (
        ("README.md", README.read_text(encoding="utf-8")),
        ("docs/benchmark.md", benchmark),
    ):
        assert f"{qos0:,}" in text, f"{page} does not quote the latest QoS 0 rate {qos0:,}"
    assert results["commit"] in benchmark and results["date"] in benchmark
