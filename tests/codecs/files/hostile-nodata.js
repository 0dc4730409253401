// A decoder that gives no data for anything but a battery frame (0x01): an empty result
// (0x02), only warnings (0x03), nothing at all (0x04), data that is not an object (0x05).
function decodeUplink(input) {
  var bytes = input.bytes;
  if (bytes[0] === 0x01) {
    return { data: { battery: bytes[1] } };
  }
  if (bytes[0] === 0x02) {
    return {};
  }
  if (bytes[0] === 0x03) {
    return { warnings: ["nothing to report"] };
  }
  if (bytes[0] === 0x05) {
    return { data: 42 };
  }
}
