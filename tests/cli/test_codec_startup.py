"""A broken codec file stops the long-running commands, naming the file and what to change."""

from __future__ import annotations

from pathlib import Path

from tests.operator_files import run_cli

DECODER = """
function decodeUplink(input) {
  return {data: {distance: (input.bytes[0] << 8) | input.bytes[1]}};
}
"""

CODEC = """
codec: acme-level
uplinkDecoder:
  fileName: acme-level.js
  examples:
    - description: two hundred millimetres
      input: {fPort: 1, bytes: [0x00, 0xC8]}
      output: {data: {distance: 201}}
metrics:
  water_level_cm: depth_cm - distance / 10
"""


def test_a_codec_whose_example_fails_stops_start_up_naming_it(tmp_path: Path) -> None:
    codecs = tmp_path / "codecs"
    codecs.mkdir()
    (codecs / "acme-level.js").write_text(DECODER)
    (codecs / "acme-level.yaml").write_text(CODEC)
    env = {"CITYIOT_CODECS_PATH": str(codecs), "CITYIOT_RUN_DIR": str(tmp_path)}
    for command in ("ingest", "api"):
        done = run_cli(command, env=env)
        assert done.returncode != 0
        said = " ".join(done.stderr.split())
        assert "invalid codec file:" in said and "acme-level.yaml: codec acme-level" in said, said
        assert "'two hundred millimetres'" in said and "expected 201, got 200" in said, said

    (codecs / "acme-level.js").unlink()
    done = run_cli("ingest", env=env)
    said = " ".join(done.stderr.split())
    assert done.returncode != 0 and "acme-level.js is missing" in said, said
