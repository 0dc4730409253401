"""Benchmarks: cityiot ingest against a peer (Node-RED) on the same load (`cityiot bench`)."""
