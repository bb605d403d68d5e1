"""Shared test helpers (imported by the tests, not collected)."""
