"""The playground's pieces without a browser: turn detection, the session view, the command line,
the agent file runner, and where the page's livekit-client comes from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from protoface_emulator.playground import command as playground
from protoface_emulator.playground import echo_agent
from protoface_emulator.playground import page_server as stack


def _feed(detector: object, level: float, seconds: float) -> list[str]:
    edges = []
    for _ in range(round(seconds / 0.02)):
        edge = detector.feed(level, 0.02)  # type: ignore[attr-defined]
        if edge:
            edges.append(edge)
    return edges


def test_turn_starts_with_voice_and_ends_after_a_pause() -> None:
    detector = echo_agent.TurnDetector()
    assert _feed(detector, -100.0, 1.0) == []  # digital silence (a muted microphone)
    assert _feed(detector, -20.0, 1.5) == ["start"]
    assert _feed(detector, -100.0, 0.3) == []  # a gap between words is not a turn end
    assert _feed(detector, -22.0, 0.5) == []
    assert _feed(detector, -100.0, 1.0) == ["end"]


def test_a_turn_without_pauses_is_cut_without_a_new_start() -> None:
    detector = echo_agent.TurnDetector(max_turn_seconds=2.0)
    assert _feed(detector, -20.0, 4.5) == ["start", "cut", "cut"]
    assert detector.talking
    assert _feed(detector, -100.0, 1.0) == ["end"]


def test_turn_ignores_clicks_and_steady_noise() -> None:
    detector = echo_agent.TurnDetector()
    assert _feed(detector, -20.0, 0.06) == []  # a click shorter than start_seconds
    assert _feed(detector, -100.0, 0.5) == []
    # Room noise: the floor follows it and it never counts as speech.
    assert _feed(detector, -55.0, 5.0) == []
    assert _feed(detector, -25.0, 0.5) == ["start"]


class _OfflineRoom:
    def isconnected(self) -> bool:
        return False


async def test_avatar_state_follows_the_plugin_and_the_session() -> None:
    from livekit.plugins import protoface

    echo = echo_agent.EchoAgent(_OfflineRoom(), None)
    assert echo.avatar_state == "joining"
    echo.on_agent_state(SimpleNamespace(new_state="speaking"))
    assert echo.avatar_state == "joining"  # not before the avatar is in
    echo.on_avatar_joined()
    assert echo.avatar_state == "listening"
    echo.on_agent_state(SimpleNamespace(new_state="speaking"))
    assert echo.avatar_state == "speaking"
    echo.on_agent_state(SimpleNamespace(new_state="listening"))
    assert echo.avatar_state == "listening"
    echo.on_avatar_lost(protoface.AvatarLostEvent("sess_1", "worker_lost", "failed"))
    echo.on_agent_state(SimpleNamespace(new_state="speaking"))
    assert echo.avatar_state == "lost"  # audio-only speech is not the avatar speaking
    echo.on_avatar_restored(
        protoface.AvatarRestoredEvent("sess_2", "protoface-avatar-agent-2", "sess_1", "worker_lost")
    )
    assert echo.avatar_state == "restored"
    echo.on_agent_state(SimpleNamespace(new_state="speaking"))
    assert echo.avatar_state == "speaking"


def test_level_of_silence_and_full_scale() -> None:
    silence = echo_agent.silent_frame(0.02)
    assert echo_agent.level_db(silence) == -100.0
    loud = echo_agent.rtc.AudioFrame(b"\xff\x7f" * 320, 16000, 1, 320)
    assert echo_agent.level_db(loud) == pytest.approx(0.0, abs=0.01)


def test_session_summary_drops_transport_secrets() -> None:
    session = {
        "id": "sess_1",
        "status": "failed",
        "transport": {"room_name": "r", "worker_token": "eyJsecret", "url": "ws://x"},
        "failure": {"code": "livekit_auth_failed", "message": "bad token"},
        "usage": {"billable_seconds": 3, "frames": 60},
    }
    summary = stack.session_summary(session)
    assert summary["room_name"] == "r"
    assert summary["failure_code"] == "livekit_auth_failed"
    assert summary["usage"] == {"billable_seconds": 3, "frames": 60}
    assert "eyJsecret" not in repr(summary)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--port", "70000"], "--port 70000"),
        (["--agent", "/nonexistent/agent.py"], "/nonexistent/agent.py"),
        (["--ready-timeout", "0"], "--ready-timeout 0"),
    ],
)
def test_bad_arguments_name_the_value(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        playground.parse_args(argv)
    assert exc.value.code == 2
    assert named in capsys.readouterr().err


OLD_STYLE_AGENT = """
from livekit.agents import JobContext, WorkerOptions, cli


async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()


def prewarm(proc: object) -> None:
    pass


if __name__ == "__main__":
    cli.run_app(WorkerOptions(entrypoint_fnc=entrypoint, prewarm_fnc=prewarm, load_fnc=lambda: 0.9))
"""

NO_WORKER = """
def entrypoint() -> None:
    pass
"""


def _load_in_child(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    """`load_agent_server` on a file, in a child process (it imports the file)."""
    agent = tmp_path / "user_agent.py"
    agent.write_text(source)
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from livekit.agents import AgentServer\n"
        "from protoface_emulator.playground.run_agent import load_agent_server\n"
        "name = load_agent_server(Path(sys.argv[1]))\n"
        "module = sys.modules[name]\n"
        "servers = [v for v in vars(module).values() if isinstance(v, AgentServer)]\n"
        "print(name, len(servers), servers[0].setup_fnc.__name__, servers[0].load_fnc())\n"
    )
    return subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", probe, str(agent)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_old_style_file_runs_as_the_worker_it_hands_cli_run_app(tmp_path: Path) -> None:
    result = _load_in_child(tmp_path, OLD_STYLE_AGENT)
    assert result.returncode == 0, result.stderr
    # Imported by its own name (job processes import it so), one AgentServer made
    # from its WorkerOptions (its prewarm kept; its load reported idle, so the
    # playground's only worker always gets the tab's job), and cli.run_app's
    # deprecation never triggered.
    assert result.stdout.split() == ["user_agent", "1", "prewarm", "0.0"]


def test_a_file_with_no_worker_is_refused_saying_what_to_write(tmp_path: Path) -> None:
    result = _load_in_child(tmp_path, NO_WORKER)
    assert result.returncode != 0
    assert "defines no AgentServer: write `server = AgentServer()`" in result.stderr


def test_the_page_gets_livekit_client_from_the_package_or_the_clone() -> None:
    bundle = stack.livekit_client_bundle()
    assert bundle is not None and bundle.is_file()
    assert bundle.name == "livekit-client.umd.js"
    # The page loads it from the playground's own server, nothing from a CDN.
    page = (stack.PAGE / "index.html").read_text()
    assert '<script src="/vendor/livekit-client.umd.js"></script>' in page
    assert "http" not in page.replace("http-equiv", "")


def test_the_registered_line_says_the_agents_name() -> None:
    from protoface_emulator.playground.agent_process import registered_agent_name

    line = (
        '2026-12-06 02:03:34,257 - INFO livekit.agents - registered worker {"agent_name": '
        '"support-bot", "deployment": "", "id": "AW_x", "url": "ws://127.0.0.1:1"}'
    )
    assert registered_agent_name(line) == "support-bot"
    assert registered_agent_name(line.replace('"support-bot"', '""')) == ""
    assert registered_agent_name("INFO livekit.agents - starting worker") is None


def test_a_named_agent_is_dispatched_through_the_tabs_token() -> None:
    import base64
    import json

    from protoface_emulator.local.livekit_dev import mint_token

    def claims(token: str) -> dict[str, object]:
        payload = token.split(".")[1]
        decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
        return decoded

    named = claims(mint_token("key", "s" * 32, "person", "room-1", dispatch_agent="support-bot"))
    assert named["roomConfig"] == {"agents": [{"agentName": "support-bot"}]}
    assert "roomConfig" not in claims(mint_token("key", "s" * 32, "person", "room-1"))
