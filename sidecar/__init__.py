"""The `ig-gate` sidecar service."""
