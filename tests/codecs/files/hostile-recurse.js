// A decoder that recurses forever on anything but a battery frame (0x01).
function walk(node) {
  return walk({ next: node }) + 1;
}

function decodeUplink(input) {
  var bytes = input.bytes;
  if (bytes[0] === 0x01) {
    return { data: { battery: bytes[1] } };
  }
  return { data: { battery: walk(bytes) } };
}
