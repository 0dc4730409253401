"""Field teams: the teams the routing file names, and which of them an alert is routed to.

A field key (or person) acts only for its teams: their work orders, and the alerts the
routing tree sends them (whose repeat notifications an acknowledgement stops).
"""

from __future__ import annotations

from typing import cast

from cityiot.api.context import ApiContext
from cityiot.api.keys import Principal
from cityiot.api.problems import Problem
from cityiot.rules.routing import Router, RoutingError, alert_labels, load_routing
from cityiot.rules.service import routing_path
from cityiot.storage.tables.alerts import Alert


def routing(ctx: ApiContext) -> Router:
    """The routing file the rules stage uses, read again when it changes."""
    path = routing_path(ctx.settings)
    try:
        stamp = path.stat().st_mtime_ns
        cached = ctx.extra.get("routing")
        if cached is not None and cached[:2] == (path, stamp):
            return cast(Router, cached[2])
        router = load_routing(path)
    except (OSError, RoutingError) as exc:
        raise Problem(503, f"the routing file {path} cannot be read; fix it: {exc}") from None
    ctx.extra["routing"] = (path, stamp, router)
    return router


def known_teams(router: Router) -> list[str]:
    """Every team a receiver of the routing file names."""
    return sorted({r.team for r in router.receivers.values() if r.team})


def team_titles(router: Router) -> dict[str, dict[str, str] | None]:
    """Every team with its title ({"zh", "en"}) from the first receiver that gives one."""
    titles: dict[str, dict[str, str] | None] = dict.fromkeys(known_teams(router))
    for receiver in router.receivers.values():
        if receiver.team and receiver.title and titles.get(receiver.team) is None:
            titles[receiver.team] = receiver.title
    return titles


def alert_teams(router: Router, alert: Alert) -> set[str]:
    """The teams whose routes take ``alert`` (those that hear of it)."""
    labels = alert_labels(
        {
            "rule": alert.rule,
            "kind": alert.kind,
            "district": alert.district,
            "severity": alert.severity,
            "vendor": alert.vendor,
            "device_id": alert.device_id,
        }
    )
    return {route.team for route in router.match(labels) if route.team}


def require_teams(principal: Principal) -> None:
    """403 for a field key made before keys carried teams: it acts for no team."""
    if principal.team_bound and principal.teams is None:
        raise Problem(
            403,
            "this field key names no team (it was made before keys carried teams); ask an "
            "administrator for a new one: cityiot keys create --role field --team TEAM",
        )
