"""Fixtures and helpers shared by several test files (import them from here)."""
