"""A real `livekit-server --dev` on loopback, and the tokens its participants use.

One place knows how: find the binary (`protoface_emulator.local.livekit_binary`), pick
free ports, keep every socket on 127.0.0.1, wait until it answers, stop it
leaving nothing behind, and mint participant tokens for it. The `livekit_server`
fixture, the offline demo and the benchmarks all start their server and mint
their tokens here.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, TypedDict

from livekit import api as lkapi

from protoface_emulator.local.livekit_binary import (
    INSTALL_HINT,
    find_livekit_server,
    not_found_message,
)
from protoface_emulator.local.loopback import (
    DEV_API_KEY,
    DevServerPorts,
    loopback_command,
    loopback_config,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "DEV_API_KEY",
    "INSTALL_HINT",
    "MAX_STALL_SECONDS",
    "LiveKitServer",
    "LiveKitServerMissing",
    "ParticipantKind",
    "find_livekit_server",
    "local_livekit_server",
    "mint_token",
    "start_livekit_server",
]

MAX_STALL_SECONDS: Final = 5.0
"""The longest `LiveKitServer.stall`: a hiccup a call should ride through. Longer,
participants' connections time out, which is a lost server, not a stalled one."""

ParticipantKind = Literal["standard", "agent", "ingress", "egress", "sip"]
"""The participant kinds a LiveKit token can carry."""


class Participant(TypedDict, total=False):
    """What a token says of its participant besides identity and room (`mint_token`'s keywords)."""

    kind: ParticipantKind
    name: str | None
    attributes: Mapping[str, str] | None
    ttl: timedelta


def mint_token(
    api_key: str,
    api_secret: str,
    identity: str,
    room: str,
    *,
    kind: ParticipantKind = "standard",
    name: str | None = None,
    attributes: Mapping[str, str] | None = None,
    ttl: timedelta = timedelta(hours=1),
    dispatch_agent: str | None = None,
) -> str:
    """A LiveKit access token for one participant of `room`.

    The grants are the ones a test participant needs: join, publish, subscribe
    and publish data. This is the only place the kit, the demo, the benchmarks and
    our tests mint participant tokens.

    Args:
        api_key: The server's API key.
        api_secret: The secret that signs the token (another one makes a token the
            server refuses).
        identity: The participant's identity.
        room: The room the token admits to.
        kind: The participant kind (`"agent"` for an agent's own participant).
        name: The participant's display name.
        attributes: Participant attributes carried by the token.
        ttl: How long the token is valid.
        dispatch_agent: Have the server dispatch this named agent to the room when
            the participant joins (for a worker registered with an `agent_name`,
            which is never dispatched on its own).
    """
    grants = lkapi.VideoGrants(
        room_join=True, room=room, can_publish=True, can_subscribe=True, can_publish_data=True
    )
    token = (
        lkapi.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_kind(kind)
        .with_grants(grants)
        .with_ttl(ttl)
    )
    if name is not None:
        token = token.with_name(name)
    if attributes:
        token = token.with_attributes(dict(attributes))
    if dispatch_agent:
        token = token.with_room_config(
            lkapi.RoomConfiguration(agents=[lkapi.RoomAgentDispatch(agent_name=dispatch_agent)])
        )
    return token.to_jwt()


class LiveKitServerMissing(RuntimeError):
    """No livekit-server binary could be found (see `INSTALL_HINT`)."""


_START_ATTEMPTS = 4


@dataclass
class LiveKitServer:
    """A running livekit-server process and how to reach it."""

    url: str
    http_url: str
    api_key: str
    api_secret: str = field(repr=False)
    process: subprocess.Popen[bytes] = field(repr=False)
    log_path: Path = field(repr=False)
    binary: str = field(default="", repr=False)  # the livekit-server executable it runs
    _stalled: bool = field(default=False, init=False, repr=False)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the server wrote, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def stall(self, seconds: float) -> None:
        """Freeze the whole server for `seconds`, as an overloaded or paused host would.

        The process is stopped (SIGSTOP): signalling, room API calls, data and
        media all stand still, then carry on when it is continued (SIGCONT)
        after `seconds`, or at once if this is cancelled or fails. Run it beside
        what the test does, e.g. `stall = asyncio.create_task(server.stall(3))`
        then `await stall`; the server is frozen once the task has started. The
        session-scoped `livekit_server` is shared, so let a stall end within its test.

        Args:
            seconds: How long, more than 0 and at most `MAX_STALL_SECONDS`.

        Raises:
            ValueError: `seconds` is not a number in that range.
            RuntimeError: the server has exited, or is already stalled.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise ValueError(f"stall(seconds) takes a number of seconds; got {seconds!r}")
        if not (math.isfinite(seconds) and 0 < seconds <= MAX_STALL_SECONDS):
            raise ValueError(
                f"stall(seconds) takes more than 0 and at most {MAX_STALL_SECONDS:g} s; got "
                f"{seconds!r} (to lose the server for longer, stop() it instead)"
            )
        if self.process.poll() is not None:
            raise RuntimeError(f"livekit-server has exited ({self.process.returncode}); no stall")
        if self._stalled:
            raise RuntimeError("livekit-server is already stalled; await that stall first")
        self._stalled = True
        try:
            self.process.send_signal(signal.SIGSTOP)
            await asyncio.sleep(seconds)
        finally:
            self._stalled = False
            self._continue()

    def _continue(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server and wait for it; kill it if it will not go."""
        # A stalled server would not act on SIGTERM until continued.
        self._continue()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if not os.environ.get("LIVEKIT_DEV_KEEP_LOG"):
            self.log_path.unlink(missing_ok=True)

    def token(
        self,
        identity: str,
        room: str,
        *,
        api_secret: str | None = None,
        **participant: Unpack[Participant],
    ) -> str:
        """A token for a participant of `room` on this server (see `mint_token`).

        Args:
            identity: The participant's identity.
            room: The room the token admits to.
            api_secret: Sign with this secret instead of the server's, for a
                token the server refuses.
            **participant: `kind`, `name`, `attributes` and `ttl`, as `mint_token` takes them.
        """
        secret = api_secret if api_secret is not None else self.api_secret
        return mint_token(self.api_key, secret, identity, room, **participant)

    def api(self) -> lkapi.LiveKitAPI:
        """A server API client for this server (`async with server.api() as lk:`)."""
        return lkapi.LiveKitAPI(self.http_url, self.api_key, self.api_secret)


def start_livekit_server(
    binary: str | None = None, *, ready_timeout: float = 20.0
) -> LiveKitServer:
    """Start `livekit-server --dev` bound to 127.0.0.1 on free ports and wait for it.

    Raises:
        LiveKitServerMissing: no binary was found (the message says how to get one).
        RuntimeError: the server exited or did not answer within `ready_timeout`.
    """
    binary = binary or find_livekit_server()
    if binary is None:
        raise LiveKitServerMissing(not_found_message())
    # Free ports are picked before the server binds them, so another process can
    # take one in between; a few fresh tries make that race harmless.
    for attempt in range(_START_ATTEMPTS):
        server = _launch(binary)
        try:
            _wait_ready(server, ready_timeout)
            return server
        except _PortTaken:
            tail = server.log_tail()
            server.stop()
            if attempt == _START_ATTEMPTS - 1:
                raise RuntimeError(
                    f"livekit-server could not bind its ports after {_START_ATTEMPTS} tries:\n"
                    f"{tail}"
                ) from None
    raise AssertionError("unreachable")


@contextmanager
def local_livekit_server(
    binary: str | None = None, *, ready_timeout: float = 20.0
) -> Iterator[LiveKitServer]:
    """`start_livekit_server` as a `with` block: the server is stopped when it ends.

    Outside pytest (demos, benchmarks, scripts) this is the way to get a server;
    in tests, the `livekit_server` fixture.
    """
    server = start_livekit_server(binary, ready_timeout=ready_timeout)
    try:
        yield server
    finally:
        server.stop()


class _PortTaken(Exception):
    pass


def _wait_ready(server: LiveKitServer, ready_timeout: float) -> None:
    process = server.process
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = server.log_tail()
            if "address already in use" in tail:
                raise _PortTaken
            server.stop()
            raise RuntimeError(
                f"livekit-server exited with code {process.returncode} at start:\n{tail}"
            )
        try:
            with urllib.request.urlopen(server.http_url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    tail = server.log_tail()
    server.stop()
    raise RuntimeError(
        f"livekit-server did not answer on {server.http_url} within {ready_timeout:.0f} s:\n{tail}"
    )


def _launch(binary: str) -> LiveKitServer:
    ports = DevServerPorts.from_port(0)
    log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
        prefix="livekit-server-", suffix=".log", delete=False
    )
    # A fresh secret per server (livekit-server --dev's placeholder is too short for
    # HS256), passed in the environment so it never shows in the process list.
    api_secret = secrets.token_urlsafe(32)
    env = {**os.environ, "LIVEKIT_KEYS": f"{DEV_API_KEY}: {api_secret}"}
    process = subprocess.Popen(
        loopback_command(binary, loopback_config(ports, log_level=None)),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    log_file.close()
    return LiveKitServer(
        url=ports.url,
        http_url=ports.http_url,
        api_key=DEV_API_KEY,
        api_secret=api_secret,
        process=process,
        log_path=Path(log_file.name),
        binary=binary,
    )
