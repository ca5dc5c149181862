"""Loopback fake providers (oracle and replay teachers, both wire protocols) for tests and demos."""
