"""``depot``: developer and operator commands.

``depot token --owner alice [--admin] [--ttl 3600]`` prints a bearer token signed with
``DEPOT_JWT_SECRET``.
"""

from __future__ import annotations

import argparse
import os
import sys

from depot_common.auth import mint_token


def _token(args: argparse.Namespace) -> int:
    secret = os.environ.get("DEPOT_JWT_SECRET", "")
    if not secret:
        sys.stderr.write("depot token: DEPOT_JWT_SECRET is not set (source .devstack/env after make dev)\n")
        return 2
    sys.stdout.write(mint_token(secret, args.owner, admin=args.admin, ttl=args.ttl) + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="depot", description="Depot developer and operator tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser(
        "token",
        help="mint a bearer token from DEPOT_JWT_SECRET",
        description="Print an HS256 bearer token for OWNER, signed with DEPOT_JWT_SECRET.",
    )
    token.add_argument("--owner", required=True, help="owner id (the token's sub claim)")
    token.add_argument("--admin", action="store_true", help="grant the admin role (ops endpoints)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.set_defaults(run=_token)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "ttl", 1) <= 0:
        sys.stderr.write("depot token: --ttl must be a positive number of seconds\n")
        return 2
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
