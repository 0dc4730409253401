// A LoRaWAN manhole sensor, written for the ChirpStack link's tests: a report on fPort 5
// (water level in mm, big-endian; tilt in degrees; cover open), and one downlink command.
function decodeUplink(input) {
  var b = input.bytes;
  if (input.fPort !== 5) {
    return {errors: ["fPort " + input.fPort + " is not a report (fPort 5)"]};
  }
  if (b.length !== 4) {
    return {errors: ["a report is 4 bytes, got " + b.length]};
  }
  return {data: {level_mm: (b[0] << 8) | b[1], tilt: b[2], open: b[3] === 1}};
}

function encodeDownlink(input) {
  var d = input.data;
  if (d.name === "set_interval") {
    var m = d.args.minutes;
    return {bytes: [0x01, (m >> 8) & 0xff, m & 0xff], fPort: 10};
  }
  return {errors: ["unknown command " + d.name]};
}
