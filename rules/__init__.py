"""Rules engine: rule definitions, evaluation state, alert lifecycle, routing, notifiers,
work orders (DESIGN §5). Built in a later issue; the ingest already hands it validated readings."""
