// A decoder that allocates without bound on anything but a battery frame (0x01): many
// small arrays (0x02) or large typed arrays (0x03).
var decoded = 0; // globals live in the script's context: a fresh context starts again at 0

function decodeUplink(input) {
  var bytes = input.bytes;
  if (bytes[0] === 0x01) {
    decoded++;
    return { data: { battery: bytes[1], decoded: decoded } };
  }
  var log = [];
  if (bytes[0] === 0x03) {
    for (;;) {
      log.push(new Uint8Array(65536));
    }
  }
  for (;;) {
    log.push([input.fPort, log.length, log.length * 2]);
  }
}
