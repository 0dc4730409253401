// hexframe: the legacy compact frame of the city's older NB-IoT devices, sent as ASCII hex
// digits. A TS013 decoder (decodeUplink) for cityiot's sandbox.
//
//   offset  size  field (integers big-endian)
//   0       1     0xA5 start byte
//   1       1     version, 0x01
//   2       1     kind code (KINDS below)
//   3       4     seq (uint32)
//   7       4     timestamp, epoch seconds (uint32); 0 = none, the receive time is used
//   11      1     n, number of metrics
//   12      5*n   n * (metric code: uint8; value: int32, the reading * 1000; a flag is 0 or
//                 1000, an enum its value's index * 1000)
//   12+5n   2     CRC-16/XMODEM of every byte before it
//
// The codes are the format's own, fixed for good: devices in the field send them. They are
// the same as ingest/codecs/hexframe_codes.yaml, which the platform's encoder reads (a test
// holds the two equal). The output's kind is checked against the device's kind.

var KINDS = {
  1: {kind: "manhole", metrics: {
    1: ["tilt_deg", "float"],
    2: ["cover_open", "bool"],
    3: ["water_level_cm", "float"],
    4: ["gas_ch4_ppm", "float"],
    5: ["battery_pct", "float"],
    6: ["rssi_dbm", "float"]
  }},
  2: {kind: "streetlight", metrics: {
    1: ["power_on", "bool"],
    2: ["dim_pct", "float"],
    3: ["voltage_v", "float"],
    4: ["current_a", "float"],
    5: ["power_w", "float"],
    6: ["energy_kwh", "float"],
    7: ["lux", "float"],
    8: ["leakage_ma", "float"],
    9: ["lamp_fault", "bool"]
  }},
  3: {kind: "hydrant", metrics: {
    1: ["pressure_mpa", "float"],
    2: ["valve_open", "bool"],
    3: ["flow_lps", "float"],
    4: ["tilt_deg", "float"],
    5: ["temperature_c", "float"],
    6: ["battery_pct", "float"]
  }},
  4: {kind: "water", metrics: {
    1: ["pressure_mpa", "float"],
    2: ["flow_m3h", "float"],
    3: ["volume_m3", "float"],
    4: ["ph", "float"],
    5: ["turbidity_ntu", "float"],
    6: ["chlorine_mgl", "float"],
    7: ["battery_pct", "float"]
  }},
  5: {kind: "parking", metrics: {
    1: ["occupied", "bool"],
    2: ["battery_pct", "float"],
    3: ["rssi_dbm", "float"]
  }},
  6: {kind: "waterlogging", metrics: {
    1: ["water_depth_cm", "float"],
    2: ["rainfall_mmh", "float"],
    3: ["sign_on", "bool"],
    4: ["barrier_closed", "bool"],
    5: ["battery_pct", "float"],
    6: ["rssi_dbm", "float"]
  }},
  7: {kind: "drainage", metrics: {
    1: ["level_cm", "float"],
    2: ["fill_pct", "float"],
    3: ["flow_m3h", "float"],
    4: ["velocity_ms", "float"],
    5: ["overflow", "bool"],
    6: ["battery_pct", "float"],
    7: ["rssi_dbm", "float"]
  }},
  8: {kind: "gas", metrics: {
    1: ["pressure_kpa", "float"],
    2: ["ch4_lel_pct", "float"],
    3: ["temperature_c", "float"],
    4: ["valve_closed", "bool"],
    5: ["alarm_state", "enum", ["normal", "low", "high", "fault"]],
    6: ["battery_pct", "float"],
    7: ["rssi_dbm", "float"]
  }},
  9: {kind: "tunnel", metrics: {
    1: ["o2_pct", "float"],
    2: ["h2s_ppm", "float"],
    3: ["ch4_lel_pct", "float"],
    4: ["temperature_c", "float"],
    5: ["humidity_pct", "float"],
    6: ["sump_level_cm", "float"],
    7: ["ventilation", "enum", ["off", "low", "high"]],
    8: ["door_open", "bool"]
  }}
};

var CRC_TABLE = (function () {
  var table = [];
  for (var n = 0; n < 256; n++) {
    var crc = n << 8;
    for (var b = 0; b < 8; b++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    table.push(crc);
  }
  return table;
})();

function crc16xmodem(bytes, end) {
  var crc = 0;
  for (var i = 0; i < end; i++) crc = ((crc << 8) & 0xffff) ^ CRC_TABLE[(crc >> 8) ^ bytes[i]];
  return crc;
}

var HEX = (function () {
  var digits = [];
  for (var c = 0; c < 256; c++) digits.push(-1);
  var chars = "0123456789abcdefABCDEF";
  for (var i = 0; i < chars.length; i++) digits[chars.charCodeAt(i)] = parseInt(chars[i], 16);
  return digits;
})();

function hexToBytes(input) {
  var n = input.length;
  if (n % 2 !== 0) return null;
  var out = new Array(n / 2);
  for (var i = 0, j = 0; i < n; i += 2, j++) {
    var high = HEX[input[i]], low = HEX[input[i + 1]];
    if (high < 0 || low < 0 || high === undefined || low === undefined) return null;
    out[j] = (high << 4) | low;
  }
  return out;
}

function u32(b, at) {
  return ((b[at] << 24) >>> 0) + (b[at + 1] << 16) + (b[at + 2] << 8) + b[at + 3];
}

function decodeUplink(input) {
  var f = hexToBytes(input.bytes);
  if (f === null) return {errors: ["hexframe: payload is not ASCII hex digits"]};
  if (f.length < 14) {
    return {errors: ["hexframe: " + f.length + " bytes is shorter than the 14-byte minimum"]};
  }
  if (f[0] !== 0xa5) {
    var start = ("0" + f[0].toString(16).toUpperCase()).slice(-2);
    return {errors: ["hexframe: start byte is 0x" + start + ", expected 0xA5"]};
  }
  if (f[1] !== 1) return {errors: ["hexframe: version " + f[1] + " is not supported (only 1)"]};
  var n = f[11], expected = 12 + 5 * n + 2;
  if (f.length !== expected) {
    return {errors: ["hexframe: " + f.length + " bytes, but " + n + " metrics need " + expected]};
  }
  if (((f[expected - 2] << 8) | f[expected - 1]) !== crc16xmodem(f, expected - 2)) {
    return {errors: ["hexframe: CRC mismatch (frame corrupted in transit)"]};
  }
  var kind = KINDS[f[2]];
  if (!kind) return {errors: ["hexframe: kind code " + f[2] + " (not in the code table)"]};
  var data = {kind: kind.kind, seq: u32(f, 3)};
  var ts = u32(f, 7);
  if (ts) data.ts = ts * 1000;
  for (var i = 0; i < n; i++) {
    var at = 12 + 5 * i;
    var code = f[at], raw = (f[at + 1] << 24) | (f[at + 2] << 16) | (f[at + 3] << 8) | f[at + 4];
    var metric = kind.metrics[code];
    if (!metric) {
      return {errors: ["hexframe: metric code " + code + " is not defined for " + kind.kind]};
    }
    var name = metric[0], type = metric[1];
    if (type === "float") {
      data[name] = raw / 1000;
    } else if (type === "bool") {
      if (raw !== 0 && raw !== 1000) {
        return {errors: ["hexframe: flag " + name + " must be 0 or 1000, got " + raw]};
      }
      data[name] = raw === 1000;
    } else {
      var values = metric[2], index = raw / 1000;
      if (raw % 1000 !== 0 || index < 0 || index >= values.length) {
        return {errors: ["hexframe: " + name + " must be its value's index * 1000, 0 to " +
          (values.length - 1) * 1000 + " (" + values.join(", ") + "), got " + raw]};
      }
      data[name] = values[index];
    }
  }
  return {data: data};
}
