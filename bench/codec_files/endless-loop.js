// endless-loop: a decoder that never returns, as a broken vendor script may. The
// benchmark's hostile check publishes to a device of this codec beside the normal load: the
// sandbox stops each call at its time limit and the frame becomes a dead letter.

function decodeUplink(input) {
  while (true) {}
}
