"""Device CSV parsing (docs/design.md §7): good files, and every kind of bad row."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cityiot.storage.device_csv import REQUIRED_COLUMNS, RowError, parse_device_csv

HEADER = (
    "device_id,vendor,kind,district,lat,lon,address,report_interval_s,"
    "depth_cm,lot_id,max_stay_min,zone,install_date"
)
GOOD = f"""{HEADER}
MH-0001,acme,manhole,yicheng,32.98,114.02,"Jiefang Rd, No. 1",,180,,,,2024-03-01
SL-0001,lumen,streetlight,kaifaqu,32.95,114.05,解放路 12 号,30,,,,,
HY-0001,acme,hydrant,gaoxinqu,32.97,114.10,,,,,,,
WT-0001,aqua,water,shifanqu,33.01,114.00,Pump station 3,60,,,,Z-north,
PK-0001,acme,parking,xincai,32.75,114.98,Lot A,60,,lot-a,120,,
"""


def _only_error(text: str) -> RowError:
    result = parse_device_csv(text)
    assert len(result.errors) == 1, result.errors
    return result.errors[0]


def _row(**changes: str) -> str:
    """A CSV with one good manhole row (line 2) but for ``changes``."""
    cells = {
        "device_id": "MH-1",
        "vendor": "acme",
        "kind": "manhole",
        "district": "yicheng",
        "lat": "32.98",
        "lon": "114.02",
        "address": "Jiefang Rd",
        "report_interval_s": "300",
        "depth_cm": "150",
        "lot_id": "",
        "max_stay_min": "",
        "zone": "",
        "install_date": "",
    } | changes
    return f"{HEADER}\n{','.join(cells.values())}\n"


def test_good_file_parses_every_row_typed() -> None:
    result = parse_device_csv(GOOD)
    assert result.errors == []
    rows = {r.device_id: r for r in result.rows}
    assert list(rows) == ["MH-0001", "SL-0001", "HY-0001", "WT-0001", "PK-0001"]
    manhole = rows["MH-0001"]
    assert (manhole.line, manhole.vendor, manhole.kind, manhole.district) == (
        2,
        "acme",
        "manhole",
        "yicheng",
    )
    assert (manhole.lat, manhole.lon) == (32.98, 114.02)
    assert manhole.address == "Jiefang Rd, No. 1"
    assert manhole.report_interval_s == 300  # empty: the kind's default
    assert manhole.attributes == {"depth_cm": 180.0}
    assert manhole.install_date == dt.date(2024, 3, 1)
    assert rows["SL-0001"].address == "解放路 12 号"
    assert rows["SL-0001"].report_interval_s == 30
    assert rows["HY-0001"].attributes == {}
    assert rows["WT-0001"].attributes == {"zone": "Z-north"}
    assert rows["PK-0001"].attributes == {"lot_id": "lot-a", "max_stay_min": 120.0}
    assert manhole.optional_columns == {
        "depth_cm",
        "lot_id",
        "max_stay_min",
        "zone",
        "install_date",
    }


def test_required_columns_alone_are_enough() -> None:
    text = ",".join(REQUIRED_COLUMNS) + "\nSL-1,lumen,streetlight,yicheng,32.9,114.0,,\n"
    result = parse_device_csv(text)
    assert result.errors == []
    assert result.rows[0].report_interval_s == 60
    assert result.rows[0].optional_columns == frozenset()


def test_spreadsheet_habits_are_accepted() -> None:
    """A BOM, CRLF line ends, capitalised headers, padded cells and blank lines."""
    text = (
        "\ufeffDevice_ID, Vendor ,kind,district,lat,lon,address,report_interval_s\r\n"
        "\r\n"
        " SL-1 , lumen ,streetlight,yicheng, 32.9 ,114.0,,\r\n"
        ",,,,,,,\r\n"
    )
    result = parse_device_csv(text)
    assert result.errors == []
    assert [(r.line, r.device_id, r.vendor, r.lat) for r in result.rows] == [
        (3, "SL-1", "lumen", 32.9)
    ]


def test_missing_required_columns_is_one_error_naming_them() -> None:
    error = _only_error("device_id,vendor,kind,lat\nMH-1,acme,manhole,32\n")
    assert error.line == 1
    assert "district, lon, address, report_interval_s" in error.message
    assert parse_device_csv("device_id,vendor,kind,lat\nMH-1,acme,manhole,32\n").rows == []


def test_empty_file_says_what_the_header_must_be() -> None:
    error = _only_error("")
    assert error.line == 1 and "device_id,vendor,kind" in error.message


def test_repeated_column_is_an_error() -> None:
    error = _only_error(HEADER + ",lat\n")
    assert "lat more than once" in error.message


def test_unknown_column_is_reported_and_rows_still_parse() -> None:
    text = ",".join(REQUIRED_COLUMNS) + ",depht_cm\nSL-1,lumen,streetlight,yicheng,32.9,114,,,x\n"
    result = parse_device_csv(text)
    (error,) = result.errors
    assert str(error).startswith(
        "line 1, depht_cm: unknown column 'depht_cm', ignored; remove it or use one of "
    )
    assert str(error).endswith(
        "install_date, dev_eui, imei, onenet_dev_id (did you mean 'depth_cm'?)"
    )
    for column in ("depth_cm", "zone", "lot_id", "max_stay_min"):  # every kind's columns
        assert f" {column}, " in str(error)
    assert len(result.rows) == 1


@pytest.mark.parametrize(
    ("changes", "column", "fragment"),
    [
        ({"device_id": ""}, "device_id", "is empty"),
        ({"device_id": "MH 1"}, "device_id", "'MH 1' is not a valid id"),
        ({"device_id": "M" * 65}, "device_id", "is not a valid id"),
        ({"vendor": "acme/x"}, "vendor", "is not a valid id"),
        ({"vendor": "alerts"}, "vendor", "'alerts' is reserved"),
        ({"vendor": "cityiot-x"}, "vendor", "'cityiot-x' starts with 'cityiot'"),
        ({"kind": "manhol"}, "kind", "'manhol' is not a kind; use one of drainage, gas, hydrant"),
        (
            {"kind": "manhol"},
            "kind",
            "(did you mean 'manhole'?) (GET /api/v1/kinds describes each)",
        ),
        (
            {"district": "yichen"},
            "district",
            "'yichen' is not a district of Zhumadian (驻马店市); use one of yicheng, kaifaqu, ",
        ),
        ({"district": "驿城区"}, "district", "did you mean 'yicheng'?"),
        ({"lat": ""}, "lat", "is empty"),
        ({"lat": "north"}, "lat", "'north' is not a number"),
        ({"lat": "nan"}, "lat", "not a finite number"),
        ({"lat": "114.02", "lon": "32.98"}, "lat", "are lat and lon swapped?"),
        ({"lon": "-181"}, "lon", "-181 is outside -180..180"),
        ({"address": "a" * 501}, "address", "shorten it to 500"),
        ({"report_interval_s": "5m"}, "report_interval_s", "'5m' is not a whole number"),
        ({"report_interval_s": "0"}, "report_interval_s", "0 is out of range"),
        ({"report_interval_s": "-60"}, "report_interval_s", "-60 is out of range"),
        ({"report_interval_s": "30.5"}, "report_interval_s", "is not a whole number"),
        ({"depth_cm": "0"}, "depth_cm", "must be greater than 0"),
        ({"depth_cm": "deep"}, "depth_cm", "'deep' is not a number"),
        ({"lot_id": "lot-a"}, "lot_id", "is an attribute of parking devices, not of a manhole"),
        ({"zone": "Z1"}, "zone", "is an attribute of water devices"),
        ({"install_date": "2024/03/01"}, "install_date", "write YYYY-MM-DD"),
        ({"install_date": "2024-02-30"}, "install_date", "is not a date"),
        ({"address": "a\tb"}, "address", "contains a tab"),
        ({"address": "a\x00b"}, "address", "control character U+0000"),
        ({"district": "yicheng\u2028"}, "district", "control character U+2028"),
    ],
)
def test_each_bad_cell_is_reported_with_line_and_column(
    changes: dict[str, str], column: str, fragment: str
) -> None:
    error = _only_error(_row(**changes))
    assert (error.line, error.column) == (2, column)
    assert fragment in error.message
    assert str(error).startswith(f"line 2, {column}: ")


def test_unquoted_comma_is_a_column_count_error() -> None:
    error = _only_error(_row(lat="32,98"))
    assert (error.line, error.column) == (2, None)
    assert "14 values but the header has 13 columns" in error.message


def test_line_break_inside_quotes_is_a_control_character() -> None:
    text = HEADER + '\nMH-1,acme,manhole,yicheng,32.98,114.02,"two\nlines",,150,,,,\n'
    error = _only_error(text)
    assert (error.line, error.column) == (2, "address")
    assert "line break" in error.message


def test_every_error_of_a_file_is_collected_and_good_rows_kept() -> None:
    text = f"""{HEADER}
MH-1,acme,manhole,yicheng,32.98,114.02,ok,,150,,,,
MH-2,acme,manhole,yichen,32.98,114.02,bad district,,150,,,,
MH-3,alerts,manhole,yicheng,132.98,114.02,two errors,,150,,,,
MH-4,acme,manhole,yicheng,32.98,114.02,ok,,150,,,,
MH-5,acme,manhole,yicheng,32.98
PK-1,acme,parking,yicheng,32.98,114.02,ok,,,lot-a,30,,
"""
    result = parse_device_csv(text)
    assert [r.device_id for r in result.rows] == ["MH-1", "MH-4", "PK-1"]
    assert [(e.line, e.column) for e in result.errors] == [
        (3, "district"),
        (4, "vendor"),
        (4, "lat"),
        (6, None),
    ]
    assert str(result.errors[0]).startswith(
        "line 3, district: 'yichen' is not a district of Zhumadian (驻马店市); use one of "
        "yicheng, kaifaqu, "
    )


def test_duplicate_device_id_rejects_all_its_rows() -> None:
    text = f"""{HEADER}
MH-1,acme,manhole,yicheng,32.98,114.02,first,,150,,,,
MH-2,acme,manhole,yicheng,32.98,114.02,other,,150,,,,
MH-1,acme,manhole,yicheng,32.99,114.02,second,,150,,,,
"""
    result = parse_device_csv(text)
    assert [r.device_id for r in result.rows] == ["MH-2"]
    assert [str(e) for e in result.errors] == [
        "line 4, device_id: 'MH-1' is also on line 2; keep one row per device "
        "(none of its rows was imported)"
    ]


def test_empty_attribute_of_another_kind_is_fine() -> None:
    result = parse_device_csv(_row(depth_cm=""))
    assert result.errors == []
    assert result.rows[0].attributes == {}


@given(st.text(max_size=300))
def test_any_text_gives_rows_or_errors_never_an_exception(text: str) -> None:
    result = parse_device_csv(text)
    assert all(e.line >= 1 and e.message for e in result.errors)


@given(st.text(max_size=80))
def test_any_cell_value_gives_a_row_or_an_error(value: str) -> None:
    result = parse_device_csv(_row(address='"' + value.replace('"', '""') + '"'))
    assert len(result.rows) + len(result.errors) >= 1
    for error in result.errors:
        assert error.line >= 1 and error.message
