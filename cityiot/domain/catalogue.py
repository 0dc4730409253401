"""The live thing model: the kinds (docs/design.md §4a) and the city a process runs with.

Kinds and the city are data: YAML files shipped as package data (``cityiot/domain/kinds/``,
``cityiot/domain/city.yaml``), a folder of kind files named by ``CITYIOT_KINDS_PATH``, a
city file named by ``CITYIOT_CITY_PATH``, and kinds changed through ``PUT /kinds/{kind}``
(kept in the database). :data:`MODEL` holds what is in force; :data:`KINDS` and
:data:`DISTRICTS` are its live mappings, changed in place by :meth:`ThingModel.refresh`, and
:meth:`ThingModel.generation` counts the changes so that compiled tables (validation,
rules) know when to rebuild. No code names a kind; a few features find their kinds by the
metrics they carry (docs/kinds.en.md: the lighting rate, parking availability, the
simulator's behaviours).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cityiot.domain.city import City, District, read_city
from cityiot.domain.thingmodel import (
    COMMON_ATTRIBUTES,
    Attribute,
    Kind,
    Metric,
    MetricType,
    ModelError,
    incompatibilities,
    parse_kind,
    read_kind_folder,
)

if TYPE_CHECKING:
    from cityiot.domain.settings import Settings

__all__ = [
    "COMMON_ATTRIBUTES", "DISTRICTS", "KINDS", "MODEL", "Attribute", "City", "District", "Kind",
    "Metric", "MetricType", "ModelError", "ThingModel",
]  # fmt: skip

log = logging.getLogger(__name__)

SHIPPED_KINDS = Path(__file__).with_name("kinds")
SHIPPED_CITY = Path(__file__).with_name("city.yaml")

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
RESERVED_VENDORS = frozenset({"alerts"})
# The platform's own MQTT client ids start with this; the broker refuses them to vendors.
RESERVED_VENDOR_PREFIX = "cityiot"


def _stamp(folder: Path | None) -> tuple[tuple[str, float, int], ...]:
    """What a folder of kind files looks like now (names, times, sizes): a change to it
    makes :meth:`ThingModel.refresh` read it again."""
    if folder is None:
        return ()
    stamp = []
    try:
        for path in folder.iterdir():
            if path.suffix in (".yaml", ".yml"):
                info = path.stat()
                stamp.append((path.name, info.st_mtime, info.st_size))
    except OSError:  # a file replaced meanwhile, the folder gone: looked at again next time
        return ()
    return tuple(sorted(stamp))


class ThingModel:
    """The kinds and the city in force in this process.

    Layers, each replacing the one below for a kind of the same id when the change is
    compatible: the shipped kind files, the files of ``CITYIOT_KINDS_PATH``, and the kinds
    changed through the API (the database's copy, passed to :meth:`refresh`). Kinds are
    never taken away while the process runs: a stored reading's kind stays known.
    """

    def __init__(self) -> None:
        self.kinds: dict[str, Kind] = {}
        self.districts: dict[str, District] = {}
        self.city: City = read_city(SHIPPED_CITY)
        self._generation = 0
        self._folder: Path | None = None
        self._folder_stamp: tuple[tuple[str, float, int], ...] = ()
        self._files: dict[str, Kind] = {}
        self._overrides: dict[str, Kind] = {}
        self._override_specs: dict[str, Mapping[str, Any]] = {}
        self._refused: dict[str, Kind] = {}  # logged once, not at every refresh
        self._overrides_as_of: Any = None  # the newest change of the API's kinds taken in

    def generation(self) -> int:
        """A number that grows whenever a kind or the city changes."""
        return self._generation

    def configure(self, kinds_path: Path | None, city_path: Path | None) -> None:
        """Load the shipped kinds, ``kinds_path``'s and the city: at start-up, where a broken
        file stops the process (:class:`ModelError` names file, kind, field and the fix)."""
        self.city = read_city(city_path) if city_path is not None else read_city(SHIPPED_CITY)
        self.districts.clear()
        self.districts.update(self.city.districts)
        self._folder = kinds_path
        self._folder_stamp = _stamp(kinds_path)
        self._files = self._read_files()
        self._overrides = {}
        self._override_specs = {}
        self._overrides_as_of = None
        self._refused.clear()
        self.kinds.clear()
        self.kinds.update(self._files)
        self._generation += 1

    def use(self, settings: Settings) -> None:
        """:meth:`configure` with the settings' ``kinds_path`` and ``city_path``."""
        self.configure(settings.kinds_path, settings.city_path)

    def _read_files(self) -> dict[str, Kind]:
        kinds = read_kind_folder(SHIPPED_KINDS)
        if self._folder is None:
            return kinds
        for name, kind in read_kind_folder(self._folder).items():
            shipped = kinds.get(name)
            problems = incompatibilities(shipped, kind) if shipped is not None else []
            if problems:
                raise ModelError(
                    f"{kind.source}: kind {name} changes the shipped kind incompatibly: "
                    + "; ".join(problems)
                )
            kinds[name] = kind
        return kinds

    def check_change(self, spec: Any, source: str = "api") -> Kind:
        """The kind ``spec`` describes, when it may replace the one in force (or is new);
        :class:`ModelError` for a broken spec, :class:`IncompatibleChange` for a change that
        stored data or devices forbid."""
        kind = parse_kind(spec, source)
        current = self.kinds.get(kind.name)
        if current is not None:
            problems = incompatibilities(current, kind)
            if problems:
                raise IncompatibleChange(kind.name, problems)
        return kind

    def refresh(
        self, overrides: Mapping[str, Mapping[str, Any]] | None = None, as_of: Any = None
    ) -> list[str]:
        """Take in changed kind files and the API's kinds (``overrides``: kind → spec, as
        stored, read when the newest of them was ``as_of``); the kinds that changed. A change
        that is broken or incompatible is logged and skipped: the running model stays as it
        is. Overrides read before ones already taken in (two refreshes crossing) are
        ignored."""
        if (
            as_of is not None
            and self._overrides_as_of is not None
            and as_of < self._overrides_as_of
        ):
            overrides = None
        if overrides is not None and overrides != self._override_specs:
            parsed: dict[str, Kind] = {}
            for name, spec in overrides.items():
                try:
                    parsed[name] = parse_kind(spec, "api")
                except ModelError as exc:
                    log.error("event=kind_override_refused kind=%s error=%s", name, exc)
            self._overrides = parsed
            self._override_specs = dict(overrides)
            if as_of is not None:
                self._overrides_as_of = as_of
        stamp = _stamp(self._folder)
        if stamp != self._folder_stamp:
            self._folder_stamp = stamp
            try:
                self._files = self._read_files()
            except ModelError as exc:
                log.error("event=kind_files_refused keeping=running_kinds error=%s", exc)
        return self._merge()

    def _merge(self) -> list[str]:
        changed: list[str] = []
        for name, kind in {**self._files, **self._overrides}.items():
            current = self.kinds.get(name)
            if current == kind:
                continue
            problems = incompatibilities(current, kind) if current is not None else []
            if problems:
                if self._refused.get(name) != kind:
                    self._refused[name] = kind
                    log.error(
                        "event=kind_change_refused kind=%s source=%s error=%s",
                        name, kind.source, "; ".join(problems),
                    )  # fmt: skip
                continue
            self.kinds[name] = kind
            self._refused.pop(name, None)
            changed.append(name)
        if changed:
            self._generation += 1
            log.info("event=kinds_changed kinds=%s", ",".join(changed))
        return changed


class IncompatibleChange(ValueError):
    """A kind change that stored data or registered devices forbid; ``problems`` name the
    metric or attribute and why."""

    def __init__(self, kind: str, problems: list[str]) -> None:
        super().__init__(f"kind {kind}: " + "; ".join(problems))
        self.kind = kind
        self.problems = problems


MODEL = ThingModel()
MODEL.configure(None, None)
KINDS: dict[str, Kind] = MODEL.kinds
DISTRICTS: dict[str, District] = MODEL.districts


def reserved_vendor(value: str) -> str | None:
    """Why ``value`` may not be a vendor id, or None when it may."""
    if value in RESERVED_VENDORS:
        return f"{value!r} is reserved for the platform's alert topics; choose another id"
    if value.lower().startswith(RESERVED_VENDOR_PREFIX):
        return (
            f"{value!r} starts with {RESERVED_VENDOR_PREFIX!r}, which the platform's own MQTT "
            "clients use (the broker refuses such client ids to vendors); choose another id"
        )
    return None


def is_valid_id(value: str) -> bool:
    """True when ``value`` may be a vendor or device id (``[A-Za-z0-9_-]{1,64}``)."""
    return ID_PATTERN.fullmatch(value) is not None
