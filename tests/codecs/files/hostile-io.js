// A decoder that reaches for files, processes and the network on anything but a battery
// frame (0x01): each way a vendor's script might try.
function decodeUplink(input) {
  var bytes = input.bytes;
  switch (bytes[0]) {
    case 0x01:
      return { data: { battery: bytes[1] } };
    case 0x11:
      var fs = require("fs");
      return { data: { battery: fs.readFileSync("/etc/passwd").length } };
    case 0x12:
      var os = import("os"); // a promise that is never run: no module is loaded
      return { data: { battery: os.exec(["id"]) } };
    case 0x13:
      var file = std.open("/etc/passwd", "r");
      return { data: { battery: file.getline().length } };
    case 0x14:
      fetch("http://127.0.0.1:1/exfiltrate?bytes=" + bytes.join(","));
      return { data: { battery: 0 } };
    default:
      var request = new XMLHttpRequest();
      request.open("GET", "http://127.0.0.1:1/", false);
      return { data: { battery: 0 } };
  }
}
