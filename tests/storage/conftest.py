"""Registry tests run on a fresh SQLite file and on a fresh PostgreSQL database each: the
``db_url`` and ``sessions`` fixtures of tests/conftest.py (PostgreSQL unreachable skips,
or fails under ``CI=true``)."""
