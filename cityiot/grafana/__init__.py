"""Grafana for the operations centre: dashboards built in Python with grafana-foundation-sdk.

- :func:`cityiot.grafana.export.dashboards` builds every dashboard (city overview, one per
  kind, device drill-down, alerts); :func:`~cityiot.grafana.export.export` writes them to
  ``deploy/grafana/dashboards/`` where Grafana's file provisioning loads them
  (``cityiot grafana export``).
- :func:`cityiot.grafana.push.push` uploads them to a running Grafana with grafana-client
  (``cityiot grafana push``).

Panels query InfluxDB with InfluxQL (data source uid ``cityiot-influxdb``) and the platform's
API through the Infinity plugin (uid ``cityiot-api``); both are provisioned by
``deploy/grafana/provisioning/datasources/cityiot.yaml``.
"""
