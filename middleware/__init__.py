"""The enforcement core (Gate) and the pure-ASGI ZeroTrustMiddleware around it."""
