"""Shared test helpers: keys, tokens, processes on loopback."""
