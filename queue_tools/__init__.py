"""Clients of the execsvc queue: they use the protocol's public API (``execsvc``) only,
never the worker or the runner."""
