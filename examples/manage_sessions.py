"""List your Protoface sessions and end the ones still active.

A plain script (no LiveKit job): `ProtofaceAPI` creates and closes its own HTTP
session. Reads PROTOFACE_API_KEY (and PROTOFACE_API_URL, if set).

    uv run python examples/manage_sessions.py            # list active sessions
    uv run python examples/manage_sessions.py --end      # ...and end them
    uv run python examples/manage_sessions.py --status failed --limit 50
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from livekit.agents import APIError

from livekit.plugins.protoface import ProtofaceAPI, ProtofaceException
from livekit.plugins.protoface.api import SESSION_STATUSES, TERMINAL_SESSION_STATUSES

ACTIVE_STATUSES = [s for s in SESSION_STATUSES if s not in TERMINAL_SESSION_STATUSES]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--status",
        action="append",
        choices=SESSION_STATUSES,
        help="only sessions in this status (repeatable; default: every active status)",
    )
    parser.add_argument("--avatar-id", help="only sessions of this avatar")
    parser.add_argument("--limit", type=int, default=100, help="page size (default 100)")
    parser.add_argument("--end", action="store_true", help="end the listed active sessions")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    filters: dict[str, str] = {}
    if args.avatar_id:
        filters["avatar_id"] = args.avatar_id

    async with ProtofaceAPI() as api:
        sessions = [
            s
            async for s in api.list_sessions(
                status=args.status or ACTIVE_STATUSES, limit=args.limit, **filters
            )
        ]
        for s in sessions:
            print(
                f"{s.get('id')}  {s.get('status'):<9}  {s.get('avatar_id')}  {s.get('created_at')}"
            )
        print(f"{len(sessions)} session(s)")

        if not args.end:
            return 0
        failures = 0
        for s in sessions:
            if s.get("status") in TERMINAL_SESSION_STATUSES:
                continue
            try:
                ended = await api.end_session(s["id"])
            except APIError as exc:  # one failure should not stop the others
                failures += 1
                print(f"could not end {s['id']}: {exc}", file=sys.stderr)
            else:
                print(f"ended {ended.get('id')} -> {ended.get('status')}")
        return 1 if failures else 0


def main() -> int:
    args = parse_args()
    try:
        return asyncio.run(run(args))
    except (ProtofaceException, APIError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
