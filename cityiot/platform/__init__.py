"""The composition root: wires the stages into one platform and runs it.

``cityiot run`` (the launcher), ``cityiot ingest --rules`` and the tests start the same
wiring; the local broker and InfluxDB for development live here too.
"""
