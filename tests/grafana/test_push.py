"""``cityiot grafana push`` against a real local HTTP server that answers like Grafana's API
(folders, data sources, dashboards/db, 401 for a bad token), and against a port nobody
listens on: grafana-client does the requests, nothing is mocked."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from typer.testing import CliRunner

from cityiot.cli import app
from cityiot.grafana.export import dashboards
from cityiot.grafana.push import GrafanaPushError, folder_uid, push
from cityiot.platform.local_services import free_port

TOKEN = "glsa_good_token"


@dataclass
class FakeGrafana:
    """A tiny Grafana: what it holds, and every request it was sent."""

    url: str = ""
    mode: str = "grafana"  # grafana, forbidden, not-grafana, web-page, slow
    folders: dict[str, str] = field(default_factory=dict)
    datasources: set[str] = field(default_factory=lambda: {"cityiot-influxdb"})
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)  # ends "slow" requests


def _handler(grafana: FakeGrafana) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _answer(self, status: int, body: Any, content_type: str = "application/json") -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body: Any = json.loads(self.rfile.read(length)) if length else None
            grafana.requests.append((method, self.path, body))
            if grafana.mode == "slow":  # no answer at all while the test runs
                grafana.release.wait(30)
                return None
            if grafana.mode == "not-grafana":
                return self._answer(404, "<html>404 page not found</html>", "text/html")
            if grafana.mode == "web-page":
                return self._answer(200, "<html>Welcome</html>", "text/html")
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._answer(401, {"message": "invalid API key", "traceID": ""})
            path = self.path.split("?")[0]
            if method == "GET" and path.startswith("/api/folders/"):
                uid = path.rsplit("/", 1)[1]
                if uid in grafana.folders:
                    return self._answer(200, {"uid": uid, "title": grafana.folders[uid]})
                return self._answer(404, {"message": "folder not found", "status": "not-found"})
            if method == "POST" and path == "/api/folders":
                if grafana.mode == "forbidden":
                    return self._answer(
                        403,
                        {"message": "You'll need additional permissions to perform this action."},
                    )
                grafana.folders[body["uid"]] = body["title"]
                return self._answer(200, {"uid": body["uid"], "title": body["title"], "id": 7})
            if method == "GET" and path.startswith("/api/datasources/uid/"):
                uid = path.rsplit("/", 1)[1]
                if uid in grafana.datasources:
                    return self._answer(200, {"uid": uid, "type": "influxdb"})
                return self._answer(404, {"message": "Data source not found"})
            if method == "POST" and path == "/api/dashboards/db":
                dashboard = body["dashboard"]
                if body.get("folderUid") not in grafana.folders:
                    return self._answer(400, {"message": "folder not found"})
                grafana.dashboards[dashboard["uid"]] = body
                return self._answer(
                    200,
                    {
                        "status": "success",
                        "uid": dashboard["uid"],
                        "url": f"/d/{dashboard['uid']}/x",
                        "version": 1,
                    },
                )
            return self._answer(404, {"message": "Not found"})

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._handle("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._handle("POST")

    return Handler


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    state = FakeGrafana()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


def test_push_creates_the_folder_and_overwrites_every_dashboard(grafana: FakeGrafana) -> None:
    report = push(grafana.url, TOKEN, "cityiot")
    assert report.folder_created and report.folder_uid == "cityiot"
    assert grafana.folders == {"cityiot": "cityiot"}
    uids = {d.uid for d in dashboards()}
    assert set(grafana.dashboards) == uids == set(report.saved)
    for uid, body in grafana.dashboards.items():
        assert body["overwrite"] is True
        assert body["folderUid"] == "cityiot"
        assert body["dashboard"]["id"] is None  # matched by uid, not by this Grafana's id
        assert body["dashboard"]["uid"] == uid
        assert report.saved[uid] == f"{grafana.url}/d/{uid}/x"
    # The Infinity data source is missing on this Grafana: said, not fatal.
    assert len(report.warnings) == 1 and "cityiot-api" in report.warnings[0]

    again = push(grafana.url, TOKEN, "cityiot")
    assert not again.folder_created
    assert sum(1 for m, p, _ in grafana.requests if (m, p) == ("POST", "/api/folders")) == 1


def test_folder_uid_comes_from_the_title() -> None:
    assert folder_uid("cityiot") == "cityiot"
    assert folder_uid("City IoT / 城市") == "city-iot"
    with pytest.raises(ValueError, match="letter or digit"):
        folder_uid("城市")


def test_a_refused_token_says_so(grafana: FakeGrafana) -> None:
    with pytest.raises(GrafanaPushError, match=r"refused the token \(401 Unauthorized\)") as err:
        push(grafana.url, "glsa_wrong", "cityiot")
    assert "--token" in str(err.value)
    assert not grafana.dashboards


def test_an_unreachable_grafana_says_so() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    with pytest.raises(GrafanaPushError, match="not reachable") as err:
        push(url, TOKEN)
    assert "connection refused" in str(err.value)
    assert "check --url" in str(err.value)


def test_a_token_without_rights_is_told_the_role_it_needs(grafana: FakeGrafana) -> None:
    grafana.mode = "forbidden"
    with pytest.raises(GrafanaPushError, match=r"403 Forbidden.*Editor"):
        push(grafana.url, TOKEN)


def test_a_url_that_is_not_grafana_says_so(grafana: FakeGrafana) -> None:
    grafana.mode = "not-grafana"
    with pytest.raises(GrafanaPushError, match="Grafana's root URL"):
        push(grafana.url, TOKEN)


def test_a_web_page_instead_of_the_api_says_so(grafana: FakeGrafana) -> None:
    grafana.mode = "web-page"
    with pytest.raises(GrafanaPushError, match="did not answer like Grafana's API"):
        push(grafana.url, TOKEN)


def test_a_grafana_that_does_not_answer_times_out(grafana: FakeGrafana) -> None:
    grafana.mode = "slow"
    with pytest.raises(GrafanaPushError, match=r"did not answer within 0.3 s"):
        push(grafana.url, TOKEN, timeout_s=0.3)
    # The request reached it and is held unanswered until the test ends: the time box, not
    # an answer, ended the push.
    assert grafana.requests


@pytest.mark.parametrize(
    ("url", "token", "message"),
    [("grafana:3000", TOKEN, "--url must look like"), ("http://g:3000", "", "no token")],
)
def test_bad_arguments_are_refused_before_any_request(url: str, token: str, message: str) -> None:
    with pytest.raises(GrafanaPushError, match=message):
        push(url, token)


def test_cli_push_prints_the_dashboards_or_exits_with_the_reason(grafana: FakeGrafana) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["grafana", "push", "--url", grafana.url, "--token", TOKEN])
    assert ok.exit_code == 0, ok.output
    assert "cityiot-overview\t" in ok.stdout
    refused = runner.invoke(app, ["grafana", "push", "--url", grafana.url, "--token", "nope"])
    assert refused.exit_code == 1
    assert "refused the token" in refused.output
    gone = runner.invoke(
        app, ["grafana", "push", "--url", f"http://127.0.0.1:{free_port()}", "--token", TOKEN]
    )
    assert gone.exit_code == 1 and "not reachable" in gone.output
