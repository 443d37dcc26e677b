"""The playground in a real browser: the bundled echo agent, and a user's own agent file.

`protoface-emulator playground` starts livekit-server, the emulator, the agent
and the page; headless Chromium opens the page with `?autoconnect=1` and a fake
microphone playing `examples/assets/hello.wav` (see `browser.py`). Each test
judges what the page saw, then stops the playground with SIGTERM and checks that
no process is left. scripts/test-example-pip runs the second test again with the
command from a fresh pip-installed environment.

`PLAYGROUND_SCREENSHOT=PATH` copies the screenshot taken while the echo agent's
avatar speaks to PATH (how docs/playground.png is made).
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

import pytest

from .browser import ROOT, assert_seen_and_heard, drive, find_tools, running_playground

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

USER_AGENT = ROOT / "examples" / "testing" / "my_agent.py"
TWO_AGENTS = Path(__file__).with_name("two_agents.py")
# The identity the plugin gives an avatar whose agent is alone in the room.
DEFAULT_AVATAR = "protoface-avatar-agent"


def test_echo_agent_echoes_stops_when_talked_over_and_goes_audio_only(tmp_path: Path) -> None:
    tools = find_tools()
    with running_playground(tools, [], cwd=tmp_path) as playground:
        report = drive(tools, playground["url"], tmp_path, scenario="echo")
        screenshot = tmp_path / "speaking.png"
        if screenshot.is_file() and os.environ.get("PLAYGROUND_SCREENSHOT"):
            shutil.copyfile(screenshot, os.environ["PLAYGROUND_SCREENSHOT"])
        # The hosted session of this tab's room is listed, without its worker token.
        with urllib.request.urlopen(playground["url"] + "api/sessions", timeout=30) as response:
            body = response.read().decode()
    assert_seen_and_heard(report, speaking_state=True)
    final, samples = report["final"], report["samples"]
    assert final["room"] in body
    assert "worker_token" not in body and "eyJ" not in body

    assert final["turns"]["heard"] >= 1
    assert any(t["who"] == "agent" and t["text"] for t in final["transcript"])

    # Talking over the avatar stopped it: the agent says so, and the avatar went
    # quiet while the person went on talking (drive.mjs waited for that).
    assert final["turns"]["interrupted"] >= 1
    after = [s for s in samples if s["wall"] > report["talkedOverAt"]]
    assert after and after[-1]["level"] < 0.005 and after[-1]["state"] != "speaking"
    assert after[-1]["mic"]

    # Ending the hosted session from the panel: the agent reported its avatar lost
    # and went on audio-only (drive.mjs heard the next echo from the agent itself).
    assert final["avatarState"] == "lost"
    mine = [s for s in final["sessions"] if s["room_name"] == final["room"]]
    assert mine and mine[0]["status"] == "ended" and mine[0]["usage"] is not None


def test_a_users_agent_file_is_seen_and_heard(tmp_path: Path) -> None:
    """examples/testing/my_agent.py, as a user passes their file: it greets, the
    avatar speaks it; no deprecation warning from the way it is run."""
    tools = find_tools()
    with running_playground(tools, ["--agent", str(USER_AGENT)], cwd=tmp_path) as playground:
        report = drive(tools, playground["url"], tmp_path, scenario="speaks")
    assert_seen_and_heard(report, speaking_state=False)
    logs = playground["stderr"].read_text(errors="replace")
    # What livekit-agents says when its deprecated CLI (`FILE dev`, cli.run_app) runs a file.
    for notice in ("built-in Python CLI is deprecated", "dev mode is deprecated"):
        assert notice not in logs, logs[-3000:]


def test_with_two_agents_in_the_room_the_page_shows_the_followed_agents_own_avatar(
    tmp_path: Path,
) -> None:
    """two_agents.py: two agents in the tab's room, each with its avatar, each speaking
    now and then. The page follows one and shows that agent's own avatar (paired by
    `lk.publish_on_behalf`), seen and heard; picking the other in "following" shows
    the other's."""
    tools = find_tools()
    with running_playground(tools, ["--agent", str(TWO_AGENTS)], cwd=tmp_path) as playground:
        report = drive(tools, playground["url"], tmp_path, scenario="two")
    first, second = report["firstFollowed"], report["secondFollowed"]
    assert report["followVisible"], "the 'following' picker is hidden with two agents"
    agents = set(first["agents"])
    assert len(agents) == 2 and "second-agent" in agents and set(second["agents"]) == agents
    assert {first["following"], second["following"]} == agents
    shown = {f["following"]: f["videoFrom"] for f in (first, second)}
    (other,) = agents - {"second-agent"}
    assert shown == {"second-agent": "second-avatar", other: DEFAULT_AVATAR}, shown

    final = report["final"]
    mine = [s for s in final["sessions"] if s["room_name"] == final["room"]]
    assert len(mine) == 2, mine  # one hosted session for each agent's avatar
