// A decoder with bugs: it decodes a battery frame (0x01) and throws on anything else.
function decodeUplink(input) {
  var bytes = input.bytes;
  if (bytes[0] === 0x01) {
    return { data: { battery: bytes[1] } };
  }
  if (bytes[0] === 0x02) {
    throw new Error("frame type 2 is not supported by this firmware");
  }
  var header = null;
  return { data: { battery: header.battery } };
}
