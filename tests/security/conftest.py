"""The security tests' fixtures: a running API as the API tests have it."""

from tests.api.conftest import api

__all__ = ["api"]
