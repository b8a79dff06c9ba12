"""Policy bundles: OPA bundle format, signing, verification, pinning, distribution, rollout, engine."""
