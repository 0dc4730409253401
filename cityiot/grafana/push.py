"""Upload the dashboards to a running Grafana through its HTTP API (grafana-client).

For a Grafana that does not load ``deploy/grafana/`` by file provisioning (e.g. the city's
existing one): the folder is created when missing, every dashboard is saved with
``overwrite`` (same uid, new version), and the data sources the panels expect are checked.
Dashboards Grafana provisioned from files cannot be overwritten through the API.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grafana_client.client as grafana_http
from grafana_client import GrafanaApi
from grafana_client.client import (
    GrafanaClientError,
    GrafanaException,
    GrafanaServerError,
    GrafanaUnauthorizedError,
)
from grafana_foundation_sdk.models.dashboard import Dashboard

from cityiot.grafana.export import dashboards as all_dashboards
from cityiot.grafana.export import to_dict
from cityiot.grafana.queries import API_UID, INFLUX_UID

TIMEOUT_S = 10.0

# The HTTP library under grafana-client: requests up to 3.x, niquests from 4.0 on. Their
# exception classes are named alike; grafana-client 5 wraps timeouts as GrafanaTimeoutError.
_HTTP: Any = getattr(grafana_http, "niquests", None) or grafana_http.requests
_TIMEOUTS: tuple[type[Exception], ...] = tuple(
    t for t in (getattr(grafana_http, "GrafanaTimeoutError", None), _HTTP.exceptions.Timeout) if t
)


class GrafanaPushError(RuntimeError):
    """Grafana could not be reached or refused a request; the message says what to change."""


@dataclass
class PushReport:
    """What :func:`push` did: the folder, the dashboards saved (uid → URL), and warnings."""

    folder_uid: str
    folder_created: bool
    saved: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def folder_uid(title: str) -> str:
    """A stable folder uid from its title: ``cityiot``, ``City IoT`` → ``city-iot``."""
    uid = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40]
    if not uid:
        raise ValueError(f"folder name {title!r} needs at least one letter or digit")
    return uid


def push(
    url: str,
    token: str,
    folder: str = "cityiot",
    dashboards: Sequence[Dashboard] | None = None,
    *,
    timeout_s: float = TIMEOUT_S,
) -> PushReport:
    """Save ``dashboards`` (default: all) into ``folder`` on the Grafana at ``url``.

    ``token`` is a service-account token (or API key) allowed to write dashboards and
    folders (role Editor or Admin). Raises :class:`GrafanaPushError` when Grafana is not
    reachable, refuses the token, or refuses a dashboard.
    """
    if not url.startswith(("http://", "https://")):
        raise GrafanaPushError(f"--url must look like http://grafana:3000, got {url!r}")
    if not token:
        raise GrafanaPushError(
            "no token: create a service account token in Grafana (Administration → "
            "Service accounts, role Editor) and pass it with --token"
        )
    try:
        uid = folder_uid(folder)
    except ValueError as exc:
        raise GrafanaPushError(f"--folder: {exc}") from None
    api = GrafanaApi.from_url(url.rstrip("/"), credential=token, timeout=timeout_s)
    target = url.rstrip("/")

    def call(doing: str, request: Any) -> Any:
        return _call(target, doing, request, timeout_s)

    created = call("read the folder", lambda: _ensure_folder(api, uid, folder))
    report = PushReport(uid, created)
    for source_uid in (INFLUX_UID, API_UID):
        if not call("read data sources", lambda s=source_uid: _has_datasource(api, s)):
            report.warnings.append(
                f"Grafana has no data source with uid {source_uid!r}: panels using it show "
                "'data source not found'; provision deploy/grafana/provisioning/datasources/"
                "cityiot.yaml (see deploy/README.md)"
            )
    for dashboard in dashboards if dashboards is not None else all_dashboards():
        body: dict[str, Any] = {
            "dashboard": {**to_dict(dashboard), "id": None},
            "folderUid": uid,
            "overwrite": True,
            "message": "cityiot grafana push",
        }
        answer = call(
            f"save dashboard {dashboard.uid}",
            lambda b=body: _json(api.dashboard.update_dashboard(b)),
        )
        report.saved[str(dashboard.uid)] = target + str(answer.get("url", ""))
    return report


def _ensure_folder(api: GrafanaApi, uid: str, title: str) -> bool:
    """True when the folder had to be created."""
    try:
        _json(api.folder.get_folder(uid))
        return False
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
    _json(api.folder.create_folder(title, uid=uid))
    return True


def _has_datasource(api: GrafanaApi, uid: str) -> bool:
    try:
        _json(api.datasource.get_datasource_by_uid(uid))
        return True
    except GrafanaClientError as exc:
        if exc.status_code in (403, 404):  # missing, or the token may not read data sources
            return False
        raise


def _json(answer: Any) -> dict[str, Any]:
    """Grafana's API answers JSON objects; anything else (an HTML page) is not Grafana."""
    if not isinstance(answer, dict):
        raise ValueError("not a JSON object")
    return answer


def _call(url: str, doing: str, request: Any, timeout_s: float) -> Any:
    """Run one API request; turn every failure into a message naming what to change."""
    try:
        return request()
    except GrafanaUnauthorizedError:
        raise GrafanaPushError(
            f"Grafana at {url} refused the token (401 Unauthorized) when trying to {doing}: "
            "check --token (a service account token of this Grafana, not expired)"
        ) from None
    except _TIMEOUTS:
        raise GrafanaPushError(
            f"Grafana at {url} did not answer within {timeout_s:g} s (trying to {doing})"
        ) from None
    except GrafanaClientError as exc:
        if exc.status_code == 403:
            raise GrafanaPushError(
                f"Grafana at {url} accepted the token but may not {doing} (403 Forbidden): "
                "give the service account the Editor (or Admin) role"
            ) from None
        if exc.status_code == 404:
            raise GrafanaPushError(
                f"{url} answered 404 when trying to {doing}: is it Grafana's root URL "
                "(e.g. http://grafana:3000, with its sub-path if it is served under one)?"
            ) from None
        raise GrafanaPushError(
            f"Grafana at {url} refused to {doing} ({exc.status_code}): {_detail(exc)}"
        ) from None
    except GrafanaServerError as exc:
        raise GrafanaPushError(
            f"Grafana at {url} failed to {doing} ({exc.status_code}): {_detail(exc)}"
        ) from None
    except ValueError:  # a 200 that is not Grafana's JSON (JSONDecodeError is one too)
        raise GrafanaPushError(
            f"{url} did not answer like Grafana's API when trying to {doing}: check --url"
        ) from None
    except (GrafanaException, _HTTP.exceptions.RequestException) as exc:
        raise GrafanaPushError(
            f"Grafana at {url} is not reachable ({_reason(exc)}): check --url and that "
            "Grafana is running"
        ) from None


def _detail(exc: GrafanaException) -> str:
    response = exc.response
    if isinstance(response, dict) and response.get("message"):
        return str(response["message"])
    return str(response)[:300]


def _reason(exc: Exception) -> str:
    text = str(exc)
    for known in ("Connection refused", "Name or service not known", "timed out"):
        if known.lower() in text.lower():
            return known.lower()
    return text[:200] or type(exc).__name__
