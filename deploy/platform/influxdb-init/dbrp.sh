#!/bin/bash
# Run once by the influxdb:2 image right after DOCKER_INFLUXDB_INIT_MODE=setup created the
# organisation and the bucket `city` (it runs the executable *.sh files here).
#
# The platform and Grafana use InfluxDB's v1 API (/write, /query with InfluxQL) and name the
# database `city`; InfluxDB 2.x answers those through a DBRP mapping database/retention
# policy -> bucket. 2.x releases of the last years give a bucket named `city` a "virtual"
# mapping city/autogen already; this explicit one makes it independent of the release.
set -euo pipefail

influx v1 dbrp create \
  --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
  --db city \
  --rp autogen \
  --default \
  --org "${DOCKER_INFLUXDB_INIT_ORG}"
