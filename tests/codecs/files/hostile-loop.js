// A decoder that never returns on anything but a battery frame (0x01).
function decodeUplink(input) {
  var bytes = input.bytes;
  if (bytes[0] === 0x01) {
    return { data: { battery: bytes[1] } };
  }
  while (true) {}
}
