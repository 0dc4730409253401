// manhole-frame: the uplink of a typical NB-IoT manhole-cover sensor (an ultrasonic distance
// to the water, a tilt switch, a methane cell), written the way vendors publish their
// decoders: a TS013 decodeUplink in plain ES5. The benchmark's decoding load speaks it.
//
//   offset  size  field (integers big-endian)
//   0       1     frame type, 0x01 = periodic report
//   1       2     seq (uint16, wraps)
//   3       4     time, epoch seconds (uint32)
//   7       2     distance from the cover to the water surface, mm (uint16)
//   9       1     tilt, 0.5° steps (uint8)
//   10      1     battery, % (uint8)
//   11      1     flags: bit 0 cover open, bit 1 tilt alarm
//   12      2     methane, ppm (uint16)
//   14      1     signal strength, dBm (int8)
//   15      1     check: XOR of bytes 0-14

function uint16(bytes, i) {
  return (bytes[i] << 8) | bytes[i + 1];
}

function uint32(bytes, i) {
  return ((bytes[i] << 24) >>> 0) + (bytes[i + 1] << 16) + (bytes[i + 2] << 8) + bytes[i + 3];
}

function int8(value) {
  return value > 127 ? value - 256 : value;
}

function decodeUplink(input) {
  var bytes = input.bytes;
  if (bytes.length !== 16) {
    return {errors: ["manhole-frame: " + bytes.length + " bytes; a report is 16"]};
  }
  var check = 0;
  for (var i = 0; i < 15; i++) {
    check ^= bytes[i];
  }
  if (check !== bytes[15]) {
    return {errors: ["manhole-frame: check byte mismatch (frame corrupted in transit)"]};
  }
  if (bytes[0] !== 0x01) {
    return {errors: ["manhole-frame: unknown frame type " + bytes[0]]};
  }
  var flags = bytes[11];
  return {
    data: {
      seq: uint16(bytes, 1),
      ts: uint32(bytes, 3) * 1000,
      distance_mm: uint16(bytes, 7),
      tilt: bytes[9] / 2,
      battery: bytes[10],
      flags: {cover_open: (flags & 1) === 1, tilt_alarm: (flags & 2) === 2},
      methane_ppm: uint16(bytes, 12),
      rssi: int8(bytes[14])
    }
  };
}
