"""Fixtures and helpers shared by several test files."""

from nb_model.client import Client
from nb_model.config import resolve_profile


def client(server, protocol="seed", **over):
    prof = resolve_profile("sandbox", endpoint=server.url, protocol=protocol, **over)
    return Client(prof)
