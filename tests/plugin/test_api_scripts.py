"""ProtofaceAPI from a plain script: no job context, owned session, pagination."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from livekit.plugins.protoface import (
    ProtofaceAPI,
    ProtofaceException,
    ProtofaceValueError,
)

from .fake_protoface import API_KEY, FAST, FakeProtoface, Reply, free_port
from .raw_http import RawRequest, raw_server, response

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def make_api(fake: FakeProtoface, session: aiohttp.ClientSession | None = None) -> ProtofaceAPI:
    return ProtofaceAPI(api_key=API_KEY, api_url=fake.url, conn_options=FAST, session=session)


async def test_works_outside_a_job_without_a_session(fake: FakeProtoface) -> None:
    """The published plugin raised RuntimeError here (no job http context)."""
    api = make_api(fake)
    try:
        status = await api.get_status()
    finally:
        await api.aclose()

    assert status["status"] == "operational"


async def test_owned_session_is_closed_by_aclose(fake: FakeProtoface) -> None:
    async with make_api(fake) as api:
        await api.get_status()
        # Reading the private attribute: ownership is not part of the public API.
        owned = api._requester.owned_session
        assert owned is not None and not owned.closed

    assert owned.closed


async def test_caller_owned_session_is_never_closed(fake: FakeProtoface) -> None:
    async with aiohttp.ClientSession() as http:
        async with make_api(fake, session=http) as api:
            await api.get_status()
        await api.aclose()

        assert not http.closed
        assert api._requester.owned_session is None
        async with http.get(f"{fake.url}/v1/status") as response:
            assert response.status == 200


async def test_aclose_is_idempotent_and_safe_before_any_request(fake: FakeProtoface) -> None:
    api = make_api(fake)
    await api.aclose()
    await api.aclose()
    assert fake.requests == []


async def test_list_sessions_follows_the_cursor_across_pages(fake: FakeProtoface) -> None:
    created = [fake.add_session(status="running")["id"] for _ in range(7)]

    async with make_api(fake) as api:
        seen = [s["id"] async for s in api.list_sessions(limit=3)]

    assert seen == list(reversed(created))
    pages = fake.requests_to("GET", "/v1/sessions")
    assert len(pages) == 3
    assert ("starting_after", created[4]) in pages[1].query
    assert ("starting_after", created[1]) in pages[2].query
    assert all(("limit", "3") in p.query for p in pages)


async def test_list_sessions_sends_filters(fake: FakeProtoface) -> None:
    fake.add_session(status="running", avatar_id="av_a")
    wanted = fake.add_session(status="queued", avatar_id="av_b")
    fake.add_session(status="ended", avatar_id="av_b")

    async with make_api(fake) as api:
        seen = [
            s["id"] async for s in api.list_sessions(status=["queued", "running"], avatar_id="av_b")
        ]

    assert seen == [wanted["id"]]
    (request,) = fake.requests_to("GET", "/v1/sessions")
    assert ("status", "queued") in request.query
    assert ("status", "running") in request.query
    assert ("avatar_id", "av_b") in request.query


async def test_list_sessions_refuses_a_repeated_cursor(fake: FakeProtoface) -> None:
    page = {"object": "list", "data": [], "has_more": True, "next_cursor": "sess_same"}
    fake.script("GET", "/v1/sessions", Reply(json=page), Reply(json=page))

    async with make_api(fake) as api:
        with pytest.raises(ProtofaceException, match="same next_cursor"):
            _ = [s async for s in api.list_sessions()]


async def test_list_avatars_follows_the_cursor(fake: FakeProtoface) -> None:
    for n in range(4):
        fake.add_avatar(f"av_custom_{n}")

    async with make_api(fake) as api:
        seen = [a["id"] async for a in api.list_avatars(limit=2)]

    assert seen == ["av_stock_001"] + [f"av_custom_{n}" for n in range(4)]
    assert len(fake.requests_to("GET", "/v1/avatars")) == 3


async def test_get_session_get_avatar_and_status(fake: FakeProtoface) -> None:
    session = fake.add_session(status="running")

    async with make_api(fake) as api:
        got = await api.get_session(session["id"])
        avatar = await api.get_avatar("av_stock_001")
        status = await api.get_status()

    assert got["id"] == session["id"] and got["status"] == "running"
    assert avatar["id"] == "av_stock_001" and avatar["is_demo"] is True
    assert status["components"][0]["name"] == "api"


@pytest.mark.parametrize(
    "bad_id", ["..", ".", "../status", "a/b", "sess_1?x=1", "sess_1#f", "sess 1", "sess_1\n", ""]
)
async def test_path_unsafe_ids_are_refused_before_the_network(
    fake: FakeProtoface, bad_id: str
) -> None:
    """An id becomes a URL path segment: `..` once turned `end_session` into `POST /v1/end`."""
    async with make_api(fake) as api:
        with pytest.raises(ProtofaceValueError) as ended:
            await api.end_session(bad_id)
        with pytest.raises(ProtofaceValueError) as got:
            await api.get_session(bad_id)
        with pytest.raises(ProtofaceValueError) as avatar:
            await api.get_avatar(bad_id)

    assert ended.value.param == got.value.param == "session_id"
    assert avatar.value.param == "avatar_id"
    assert repr(bad_id) in str(ended.value)
    assert fake.requests == []


async def test_env_vars_supply_key_and_url(
    fake: FakeProtoface, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROTOFACE_API_KEY", API_KEY)
    monkeypatch.setenv("PROTOFACE_API_URL", fake.url + "/")

    async with ProtofaceAPI(conn_options=FAST) as api:
        assert api.api_url == fake.url
        await api.get_status()

    assert fake.requests[0].headers["Authorization"] == f"Bearer {API_KEY}"


async def test_missing_key_raises_protoface_exception() -> None:
    with pytest.raises(ProtofaceException, match="PROTOFACE_API_KEY"):
        ProtofaceAPI()


async def test_manage_sessions_example_lists_and_ends_active_sessions(
    fake: FakeProtoface,
) -> None:
    active = [fake.add_session(status=s)["id"] for s in ("queued", "running", "running")]
    done = fake.add_session(status="ended")["id"]
    script = EXAMPLES / "manage_sessions.py"
    env = {**os.environ, "PROTOFACE_API_KEY": API_KEY, "PROTOFACE_API_URL": fake.url}

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        "--end",
        "--limit",
        "2",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)

    assert process.returncode == 0, stderr.decode()
    assert sorted(fake.ended) == sorted(active)
    assert done not in fake.ended
    assert "3 session(s)" in stdout.decode()


def test_client_survives_a_second_asyncio_run() -> None:
    """A script calling asyncio.run twice: the owned session must not stay on the dead loop."""
    port = free_port()
    api = ProtofaceAPI(api_key=API_KEY, api_url=f"http://127.0.0.1:{port}", conn_options=FAST)

    async def one_run() -> str:
        runner = web.AppRunner(FakeProtoface().app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            return (await api.get_status())["status"]
        finally:
            await runner.cleanup()

    assert asyncio.run(one_run()) == "operational"
    assert asyncio.run(one_run()) == "operational"  # no aclose() in between
    asyncio.run(api.aclose())
    assert api._requester.owned_session is None


async def test_closed_caller_session_is_a_clear_error(fake: FakeProtoface) -> None:
    http = aiohttp.ClientSession()
    await http.close()
    api = make_api(fake, session=http)

    with pytest.raises(ProtofaceException, match="session passed to ProtofaceAPI"):
        await api.get_status()
    assert fake.requests == []


async def test_a_session_that_is_not_an_aiohttp_session_is_refused_at_construction() -> None:
    with pytest.raises(ProtofaceValueError) as info:
        ProtofaceAPI(api_key=API_KEY, session="http")  # type: ignore[arg-type]
    assert info.value.param == "session"
    assert "str" in str(info.value)


async def test_list_sessions_refuses_a_cursor_cycle(fake: FakeProtoface) -> None:
    """A -> B -> A: a guard that only compares with the previous cursor loops forever."""

    def page(cursor: str) -> Reply:
        data = [{"object": "session", "id": f"sess_{cursor}"}]
        return Reply(json={"object": "list", "data": data, "has_more": True, "next_cursor": cursor})

    fake.script("GET", "/v1/sessions", page("a"), page("b"), page("a"), page("b"), page("a"))
    seen: list[str] = []
    async with make_api(fake) as api:
        with pytest.raises(ProtofaceException, match="same next_cursor"):
            async for session in api.list_sessions():
                seen.append(session["id"])

    assert seen == ["sess_a", "sess_b", "sess_a"]
    assert len(fake.requests_to("GET", "/v1/sessions")) == 3


async def test_list_sessions_accepts_one_status_as_a_string(fake: FakeProtoface) -> None:
    wanted = fake.add_session(status="running")["id"]
    fake.add_session(status="ended")

    async with make_api(fake) as api:
        seen = [s["id"] async for s in api.list_sessions(status="running")]

    assert seen == [wanted]


async def test_a_thousand_concurrent_calls_share_pooled_connections() -> None:
    async def respond(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(response(200, b'{"status": "operational"}'))

    async with (
        raw_server(respond) as server,
        ProtofaceAPI(api_key=API_KEY, api_url=server.url, conn_options=FAST) as api,
    ):
        results = await asyncio.gather(*(api.get_status() for _ in range(1000)))
        again = await asyncio.gather(*(api.get_status() for _ in range(100)))

    assert all(r["status"] == "operational" for r in results + again)
    assert len(server.requests) == 1100
    assert server.connections <= 100  # aiohttp's pool limit, and no new ones for `again`


async def test_client_is_usable_after_aclose(fake: FakeProtoface) -> None:
    api = make_api(fake)
    async with api:
        await api.get_status()
        async with api:  # nested: the inner exit closes, the next call reopens
            await api.get_status()
        await api.get_status()
    await api.get_status()
    await api.aclose()

    assert len(fake.requests) == 4
