"""Serving a registry on ``/metrics`` over HTTP, on an address the user gave."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Info, disable_created_metrics, start_http_server

from vsockctl import __version__

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created samples


class MetricsAddressError(ValueError):
    """A --metrics value that is not tcp:HOST:PORT."""


@dataclass(frozen=True)
class MetricsAddress:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"


def parse_metrics_address(text: str) -> MetricsAddress:
    """``tcp:HOST:PORT`` (``tcp:[::1]:PORT`` for IPv6); port 0 takes a free one."""
    scheme, _, rest = text.partition(":")
    host, _, port_text = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        if scheme != "tcp" or not host:
            raise ValueError
        ipaddress.ip_address(host)
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise MetricsAddressError(
            f"{text!r} is not tcp:HOST:PORT (an IP address: tcp:127.0.0.1:9100, tcp:[::1]:9100)"
        ) from None
    return MetricsAddress(host, port)


def build_info(registry: CollectorRegistry) -> None:
    Info("vsockctl_build", "vsockctl's version", registry=registry).info({"version": __version__})


def serve(
    registry: CollectorRegistry, address: MetricsAddress
) -> tuple[WSGIServer, MetricsAddress]:
    """Serve ``registry`` on ``address`` from a thread; the server and where it listens
    (the port filled in when 0 was asked)."""
    server, _thread = start_http_server(address.port, address.host, registry)
    return server, MetricsAddress(address.host, server.server_port)
