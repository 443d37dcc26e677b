"""ProtofaceAPI from a plain script: no job context, owned session, pagination."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from livekit.plugins.protoface import (
    ProtofaceAPI,
    ProtofaceException,
    ProtofaceValueError,
)
from protoface_emulator import Emulator
from protoface_emulator.lifecycle import ManualWorkers

from .helpers import (
    API_KEY,
    FAST,
    add_session,
    assert_ended_by_the_client,
    ended_ids,
    free_port,
)
from .raw_http import RawRequest, raw_server, response

LIST_SESSIONS = "GET /v1/sessions"

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def make_api(emu: Emulator, session: aiohttp.ClientSession | None = None) -> ProtofaceAPI:
    return ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=FAST, session=session)


def page(cursor: str, *, data: list[dict[str, str]] | None = None) -> dict[str, object]:
    """A list page that says there is more, after `cursor`."""
    return {"object": "list", "data": data or [], "has_more": True, "next_cursor": cursor}


async def test_works_outside_a_job_without_a_session(emu: Emulator) -> None:
    """The published plugin raised RuntimeError here (no job http context)."""
    api = make_api(emu)
    try:
        status = await api.get_status()
    finally:
        await api.aclose()

    assert status["status"] == "operational"


async def test_owned_session_is_closed_by_aclose(emu: Emulator) -> None:
    async with make_api(emu) as api:
        await api.get_status()
        # Reading the private attribute: ownership is not part of the public API.
        owned = api._requester.owned_session
        assert owned is not None and not owned.closed

    assert owned.closed


async def test_caller_owned_session_is_never_closed(emu: Emulator) -> None:
    async with aiohttp.ClientSession() as http:
        async with make_api(emu, session=http) as api:
            await api.get_status()
        await api.aclose()

        assert not http.closed
        assert api._requester.owned_session is None
        key = {"Authorization": f"Bearer {API_KEY}"}
        async with http.get(f"{emu.url}/v1/status", headers=key) as response:
            assert response.status == 200


async def test_aclose_is_idempotent_and_safe_before_any_request(emu: Emulator) -> None:
    api = make_api(emu)
    await api.aclose()
    await api.aclose()
    assert emu.requests.all() == []


async def test_list_sessions_follows_the_cursor_across_pages(
    emu: Emulator, workers: ManualWorkers
) -> None:
    created = [(await add_session(emu, workers, "running")).id for _ in range(7)]

    async with make_api(emu) as api:
        seen = [s["id"] async for s in api.list_sessions(limit=3)]

    assert seen == list(reversed(created))
    pages = emu.requests.matching(LIST_SESSIONS)
    assert len(pages) == 3
    assert "starting_after" not in pages[0].query
    assert pages[1].query.getall("starting_after") == [created[4]]
    assert pages[2].query.getall("starting_after") == [created[1]]
    assert all(p.query.getall("limit") == ["3"] for p in pages)


async def test_list_sessions_sends_filters(emu: Emulator, workers: ManualWorkers) -> None:
    await add_session(emu, workers, "running", avatar_id="av_stock_002")
    wanted = await add_session(emu, workers, "queued", avatar_id="av_stock_003")
    await add_session(emu, workers, "ended", avatar_id="av_stock_003")

    async with make_api(emu) as api:
        seen = [
            s["id"]
            async for s in api.list_sessions(status=["queued", "running"], avatar_id="av_stock_003")
        ]

    assert seen == [wanted.id]
    (request,) = emu.requests.matching(LIST_SESSIONS)
    statuses = [part for value in request.query.getall("status") for part in value.split(",")]
    assert sorted(statuses) == ["queued", "running"]
    assert request.query.getall("avatar_id") == ["av_stock_003"]


async def test_list_sessions_refuses_a_repeated_cursor(emu: Emulator) -> None:
    emu.faults.reply(LIST_SESSIONS, json=page("sess_same"), count=2)

    async with make_api(emu) as api:
        with pytest.raises(ProtofaceException, match="same next_cursor"):
            _ = [s async for s in api.list_sessions()]


async def test_list_avatars_follows_the_cursor(emu: Emulator) -> None:
    stock = ["av_stock_001", "av_stock_002", "av_stock_003"]
    uploads = [
        emu.store.create_avatar(name=f"custom {n}", runtime_type="avtr1").id for n in range(4)
    ]

    async with make_api(emu) as api:
        seen = [a["id"] async for a in api.list_avatars(limit=2)]

    assert seen == stock + list(reversed(uploads))  # stock first, then uploads newest first
    assert len(emu.requests.matching("GET /v1/avatars")) == 4


async def test_get_session_get_avatar_and_status(emu: Emulator, workers: ManualWorkers) -> None:
    session = await add_session(emu, workers, "running")

    async with make_api(emu) as api:
        got = await api.get_session(session.id)
        avatar = await api.get_avatar("av_stock_001")
        status = await api.get_status()

    assert got["id"] == session.id and got["status"] == "running"
    assert avatar["id"] == "av_stock_001" and avatar["is_demo"] is True
    assert status["components"][0]["name"] == "api"


@pytest.mark.parametrize(
    "bad_id", ["..", ".", "../status", "a/b", "sess_1?x=1", "sess_1#f", "sess 1", "sess_1\n", ""]
)
async def test_path_unsafe_ids_are_refused_before_the_network(emu: Emulator, bad_id: str) -> None:
    """An id becomes a URL path segment: `..` once turned `end_session` into `POST /v1/end`."""
    async with make_api(emu) as api:
        with pytest.raises(ProtofaceValueError) as ended:
            await api.end_session(bad_id)
        with pytest.raises(ProtofaceValueError) as got:
            await api.get_session(bad_id)
        with pytest.raises(ProtofaceValueError) as avatar:
            await api.get_avatar(bad_id)

    assert ended.value.param == got.value.param == "session_id"
    assert avatar.value.param == "avatar_id"
    assert repr(bad_id) in str(ended.value)
    assert emu.requests.all() == []


async def test_env_vars_supply_key_and_url(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROTOFACE_API_KEY", API_KEY)
    monkeypatch.setenv("PROTOFACE_API_URL", emu.url + "/")

    async with ProtofaceAPI(conn_options=FAST) as api:
        assert api.api_url == emu.url
        await api.get_status()

    assert emu.requests.all()[0].headers["Authorization"] == f"Bearer {API_KEY}"


async def test_missing_key_raises_protoface_exception() -> None:
    with pytest.raises(ProtofaceException, match="PROTOFACE_API_KEY"):
        ProtofaceAPI()


async def test_manage_sessions_example_lists_and_ends_active_sessions(
    emu: Emulator, workers: ManualWorkers
) -> None:
    active = [(await add_session(emu, workers, s)).id for s in ("queued", "running", "running")]
    done = (await add_session(emu, workers, "ended")).id
    script = EXAMPLES / "manage_sessions.py"
    env = {**os.environ, "PROTOFACE_API_KEY": API_KEY, "PROTOFACE_API_URL": emu.url}

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
    assert sorted(ended_ids(emu)) == sorted(active)
    for session_id in active:
        assert_ended_by_the_client(emu, session_id)
    assert done not in ended_ids(emu)
    assert "3 session(s)" in stdout.decode()


def test_client_survives_a_second_asyncio_run() -> None:
    """A script calling asyncio.run twice: the owned session must not stay on the dead loop."""
    port = free_port()
    api = ProtofaceAPI(api_key=API_KEY, api_url=f"http://127.0.0.1:{port}", conn_options=FAST)

    async def one_run() -> str:
        async with Emulator(api_key=API_KEY, port=port, worker_factory=ManualWorkers()):
            return (await api.get_status())["status"]

    assert asyncio.run(one_run()) == "operational"
    assert asyncio.run(one_run()) == "operational"  # no aclose() in between
    asyncio.run(api.aclose())
    assert api._requester.owned_session is None


async def test_closed_caller_session_is_a_clear_error(emu: Emulator) -> None:
    http = aiohttp.ClientSession()
    await http.close()
    api = make_api(emu, session=http)

    with pytest.raises(ProtofaceException, match="session passed to ProtofaceAPI"):
        await api.get_status()
    assert emu.requests.all() == []


async def test_a_session_that_is_not_an_aiohttp_session_is_refused_at_construction() -> None:
    with pytest.raises(ProtofaceValueError) as info:
        ProtofaceAPI(api_key=API_KEY, session="http")  # type: ignore[arg-type]
    assert info.value.param == "session"
    assert "str" in str(info.value)


async def test_list_sessions_refuses_a_cursor_cycle(emu: Emulator) -> None:
    """A -> B -> A: a guard that only compares with the previous cursor loops forever."""

    for cursor in "ababa":
        emu.faults.reply(
            LIST_SESSIONS, json=page(cursor, data=[{"object": "session", "id": f"sess_{cursor}"}])
        )
    seen: list[str] = []
    async with make_api(emu) as api:
        with pytest.raises(ProtofaceException, match="same next_cursor"):
            async for session in api.list_sessions():
                seen.append(session["id"])

    assert seen == ["sess_a", "sess_b", "sess_a"]
    assert len(emu.requests.matching(LIST_SESSIONS)) == 3


async def test_list_sessions_accepts_one_status_as_a_string(
    emu: Emulator, workers: ManualWorkers
) -> None:
    wanted = (await add_session(emu, workers, "running")).id
    await add_session(emu, workers, "ended")

    async with make_api(emu) as api:
        seen = [s["id"] async for s in api.list_sessions(status="running")]

    assert seen == [wanted]


async def test_a_thousand_concurrent_calls_share_pooled_connections() -> None:
    """On the raw server, which counts the connections it accepted."""

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


async def test_client_is_usable_after_aclose(emu: Emulator) -> None:
    api = make_api(emu)
    async with api:
        await api.get_status()
        async with api:  # nested: the inner exit closes, the next call reopens
            await api.get_status()
        await api.get_status()
    await api.get_status()
    await api.aclose()

    assert len(emu.requests) == 4
