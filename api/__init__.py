"""The FastAPI service (DESIGN §6): registry, vendors, readings, alerts, work orders."""
