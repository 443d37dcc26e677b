"""A livekit-server kept on loopback: its ports, its config body and its command line.

Both ways this package runs livekit-server share it: the kit's throwaway servers
(`livekit_dev`) and the one a developer runs by hand (`dev_livekit`). Every
socket, WebRTC's too, stays on 127.0.0.1.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

__all__ = ["DEV_API_KEY", "DevServerPorts", "loopback_command", "loopback_config"]

DEV_API_KEY = "devkey"
"""The API key of the dev servers this package starts."""


def _free(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class DevServerPorts:
    """The ports a dev server listens on: HTTP/WebSocket, then WebRTC over TCP and UDP."""

    http: int
    rtc_tcp: int
    rtc_udp: int

    @classmethod
    def from_port(cls, port: int) -> DevServerPorts:
        """livekit-server's layout (7880, 7881, 7882) from `port`; 0 picks three free ones."""
        if port == 0:
            return cls(
                _free(socket.SOCK_STREAM), _free(socket.SOCK_STREAM), _free(socket.SOCK_DGRAM)
            )
        return cls(port, port + 1, port + 2)

    @property
    def url(self) -> str:
        """The WebSocket URL agents and frontends connect to."""
        return f"ws://127.0.0.1:{self.http}"

    @property
    def http_url(self) -> str:
        """The HTTP URL that answers 200 once the server is up."""
        return f"http://127.0.0.1:{self.http}"


def loopback_config(ports: DevServerPorts, log_level: str | None = "warn") -> str:
    """A livekit-server config body that keeps every socket, WebRTC's too, on loopback.

    `log_level` None leaves the logging to livekit-server's own default.
    """
    logging = f"logging:\n  level: {log_level}\n" if log_level is not None else ""
    return (
        f"port: {ports.http}\n"
        f"{logging}"
        "rtc:\n"
        f"  tcp_port: {ports.rtc_tcp}\n"
        f"  udp_port: {ports.rtc_udp}\n"
        "  use_external_ip: false\n"
        "  enable_loopback_candidate: true\n"
        "  interfaces:\n"
        "    includes: [lo]\n"
        "  ips:\n"
        "    includes: [127.0.0.1/8]\n"
    )


def loopback_command(binary: str, config: str) -> list[str]:
    """The command line that runs `binary` in dev mode, bound to 127.0.0.1, with `config`.

    The keys are not on it: they go in the environment (`LIVEKIT_KEYS`), out of
    the process list.
    """
    loopback_only = ["--bind", "127.0.0.1", "--node-ip", "127.0.0.1"]
    return [binary, "--dev", *loopback_only, "--config-body", config]
