// A decoder that reports a sensor fault for anything but a battery frame (0x01).
function decodeUplink(input) {
  var bytes = input.bytes;
  if (bytes[0] === 0x01) {
    return { data: { battery: bytes[1] } };
  }
  return { errors: ["sensor fault E" + bytes[0]], warnings: ["recalibrate the sensor"] };
}
