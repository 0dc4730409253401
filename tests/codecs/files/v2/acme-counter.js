// ACME BT-1 battery monitor, firmware 2: as firmware 1, but the battery byte counts half
// percents.
function decodeUplink(input) {
  var b = input.bytes;
  if (b.length !== 8 || b[0] !== 0x10) {
    return { errors: ["not a BT-1 frame"] };
  }
  var seconds = ((b[3] << 24) >>> 0) + (b[4] << 16) + (b[5] << 8) + b[6];
  return { data: { seq: (b[1] << 8) | b[2], ts: seconds * 1000, battery: b[7] / 2 } };
}
