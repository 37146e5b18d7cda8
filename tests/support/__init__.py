"""Shared test support: streams and requests of every format (not test modules)."""
