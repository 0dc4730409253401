"""Our metric units (the kind files' ``unit``) as Grafana unit ids.

Grafana formats a field by its unit id (``celsius`` shows ``21.5 °C``, ``kwatth`` scales to
MWh). A unit Grafana has no id for is shown as it is written, as a suffix (``suffix:MPa``),
so a city's own unit needs no entry here.
"""

from __future__ import annotations

# Only units whose Grafana id shows exactly what the kind file means (Grafana's
# valueFormats/categories.ts); MPa, m³/h, NTU, mg/L, %LEL, pH have none and stay suffixes.
GRAFANA_UNITS: dict[str, str] = {
    "%": "percent",
    "%RH": "humidity",
    "°": "degree",
    "°C": "celsius",
    "°F": "fahrenheit",
    "K": "kelvin",
    "A": "amp",
    "mA": "mamp",
    "kA": "kamp",
    "V": "volt",
    "mV": "mvolt",
    "kV": "kvolt",
    "W": "watt",
    "kW": "kwatt",
    "MW": "megwatt",
    "VA": "voltamp",
    "kVA": "kvoltamp",
    "Wh": "watth",
    "kWh": "kwatth",
    "Ah": "amph",
    "mAh": "mamph",
    "Ω": "ohm",
    "dB": "dB",
    "dBm": "dBm",
    "lx": "lux",
    "ppm": "ppm",
    "ppb": "conppb",
    "mg/m³": "conmgm3",
    "μg/m³": "conμgm3",
    "µg/m³": "conμgm3",
    "Pa": "pressurepa",
    "hPa": "pressurehpa",
    "kPa": "pressurekpa",
    "bar": "pressurebar",
    "mbar": "pressurembar",
    "mm": "lengthmm",
    "m": "lengthm",
    "km": "lengthkm",
    "m/s": "velocityms",
    "km/h": "velocitykmh",
    "L": "litre",
    "m³": "m3",
    "L/h": "litreh",
    "L/min": "flowlpm",
    "m³/s": "flowcms",
    "Hz": "hertz",
    "rpm": "rotrpm",
    "kg": "masskg",
    "t": "masst",
    "ms": "ms",
    "s": "s",
    "min": "m",
    "h": "h",
    "d": "d",
}

# A unit that is only a name for "no unit" (pH is a number on its own scale).
UNITLESS = frozenset({"", "pH"})


def grafana_unit(unit: str) -> str:
    """The Grafana unit id for ``unit``: a known id, ``none`` for no unit, else a suffix."""
    unit = unit.strip()
    if unit in UNITLESS:
        return "none"
    return GRAFANA_UNITS.get(unit, f"suffix:{unit}")
