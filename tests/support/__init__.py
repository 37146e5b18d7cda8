"""Shared test support: streams, requests and fixture flows of every format (not test modules)."""
