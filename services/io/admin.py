"""``python -m services.io.admin``: manage console users and tokens from the shell.

Works on IO's own database (the same settings as ``cxm agent io``), so an admin can create
the first operator, or recover after losing every admin token, without the API:

    python -m services.io.admin create-user alice --role operator
    python -m services.io.admin token alice --label laptop
    python -m services.io.admin list
    python -m services.io.admin revoke 3
    python -m services.io.admin set-role alice admin

What it does is recorded as done by ``cli`` (``created_by``, ``revoked_by``, ``updated_by``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from services.io import auth
from services.io.app import spec
from shared.db import make_engine, migrate
from shared.settings import Settings, load_settings

ACTOR = "cli"


async def run(args: argparse.Namespace, settings: Settings) -> int:
    engine = make_engine(settings.db_url("io"))
    try:
        await migrate(engine, "io", spec.migrations)  # the agent's own list, in its order
        if args.command == "create-user":
            if await auth.get_user(engine, args.username) is not None:
                print(f"user {args.username!r} exists", file=sys.stderr)
                return 1
            await auth.create_user(engine, username=args.username, role=args.role, actor=ACTOR)
            issued = await auth.issue_token(
                engine, username=args.username, label=args.label, actor=ACTOR
            )
            print(f"created {args.username} ({args.role}); token (shown once):\n{issued['token']}")
        elif args.command == "token":
            if await auth.get_user(engine, args.username) is None:
                print(f"no user {args.username!r}", file=sys.stderr)
                return 1
            issued = await auth.issue_token(
                engine, username=args.username, label=args.label, actor=ACTOR
            )
            print(issued["token"])
        elif args.command == "revoke":
            if not await auth.revoke_token(engine, args.token_id, actor=ACTOR):
                print(f"no active token {args.token_id}", file=sys.stderr)
                return 1
        elif args.command == "set-role":
            if not await auth.set_user(engine, args.username, role=args.role, actor=ACTOR):
                print(f"no user {args.username!r}", file=sys.stderr)
                return 1
        elif args.command == "list":
            print(json.dumps(await auth.list_users(engine), indent=2))
        return 0
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.io.admin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create-user", help="create a user and print its first token")
    create.add_argument("username")
    create.add_argument("--role", choices=sorted(auth.RANK), default="viewer")
    create.add_argument("--label", default="")
    token = sub.add_parser("token", help="issue another token for a user")
    token.add_argument("username")
    token.add_argument("--label", default="")
    revoke = sub.add_parser("revoke", help="revoke a token by id (see list)")
    revoke.add_argument("token_id", type=int)
    role = sub.add_parser("set-role", help="change a user's role")
    role.add_argument("username")
    role.add_argument("role", choices=sorted(auth.RANK))
    sub.add_parser("list", help="users and their tokens (hints only, never the tokens)")
    args = parser.parse_args(argv)
    return asyncio.run(run(args, load_settings("io")))


if __name__ == "__main__":
    sys.exit(main())
