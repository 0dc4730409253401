"""Storage: the SQL registry and its migrations, InfluxDB, the broker's account files.

Stages (ingest, rules, API) build on it; it builds on :mod:`cityiot.domain` only.
"""
