"""The FastAPI service (docs/design.md §6): registry, vendors, readings, alerts, work orders."""
