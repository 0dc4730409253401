/**
 * ACME UL-200 manhole level sensor: uplink decoder (LoRa Alliance TS013).
 *
 * Frame types (first byte):
 *   0x01 periodic  distance mm (uint16 BE), temperature 0.1 degC (int16 BE), battery %
 *   0x02 alarm     flags (bit0 cover open, bit1 tilt alarm), tilt angle in degrees
 *   0x03 history   time in epoch seconds (uint32 LE), temperature 0.1 degC (int16 LE)
 */

function uint16BE(bytes, i) {
  return (bytes[i] << 8) | bytes[i + 1];
}

function int16BE(bytes, i) {
  var value = uint16BE(bytes, i);
  return value > 0x7fff ? value - 0x10000 : value;
}

function uint16LE(bytes, i) {
  return bytes[i] | (bytes[i + 1] << 8);
}

function int16LE(bytes, i) {
  var value = uint16LE(bytes, i);
  return value > 0x7fff ? value - 0x10000 : value;
}

function uint32LE(bytes, i) {
  // Multiply the top byte: << 24 would make the result a negative int32.
  return (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16)) + bytes[i + 3] * 16777216;
}

var LENGTHS = { 1: 6, 2: 3, 3: 7 };

function decodeUplink(input) {
  var bytes = input.bytes;
  if (!bytes || bytes.length === 0) {
    return { errors: ["empty frame"] };
  }
  var type = bytes[0];
  var expected = LENGTHS[type];
  if (expected === undefined) {
    return { errors: ["unknown message type 0x" + ("0" + type.toString(16)).slice(-2)] };
  }
  if (bytes.length !== expected) {
    return { errors: ["message type " + type + " has " + expected + " bytes, got " + bytes.length] };
  }
  switch (type) {
    case 0x01:
      return {
        data: {
          distance: uint16BE(bytes, 1),
          temperature: int16BE(bytes, 3) / 10,
          battery: bytes[5]
        }
      };
    case 0x02:
      var warnings = [];
      if (bytes[1] & 0xfc) {
        warnings.push("reserved flag bits set");
      }
      return {
        data: {
          cover_open: (bytes[1] & 0x01) !== 0,
          tilt_alarm: (bytes[1] & 0x02) !== 0,
          tilt: bytes[2]
        },
        warnings: warnings
      };
    default:
      return {
        data: {
          ts: uint32LE(bytes, 1) * 1000,
          temperature: int16LE(bytes, 5) / 10
        }
      };
  }
}
