"""Rules engine: rule definitions, evaluation state, alert lifecycle, routing, notifiers,
work orders and linked control (docs/design.md §5), fed the ingest's validated readings."""
