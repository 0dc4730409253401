"""The ingest: MQTT deliveries → decoded, validated readings → InfluxDB, with dead letters,
presence, the spool and scale-out partitions (docs/design.md §3)."""
