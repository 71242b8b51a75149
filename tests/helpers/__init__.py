"""Shared builders for the test suite (tiny models, inputs); fixtures wrapping them live in conftest.py."""
