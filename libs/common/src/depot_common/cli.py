"""``depot``: developer and operator commands.

``depot token --owner alice [--admin] [--ttl 3600] [--link]`` prints a bearer token signed with
``DEPOT_JWT_SECRET`` (with ``iss``/``aud`` from ``DEPOT_JWT_ISSUER``/``DEPOT_JWT_AUDIENCE`` when
set, and the roles where ``DEPOT_JWT_ROLES_CLAIM`` says, so the services accept it), or with
``--link`` a web-console sign-in link ``$DEPOT_API_URL/#token=<jwt>`` (a fragment: browsers
never send it to a server).

``depot dlq list|show|redrive --topic T --group G`` inspects the dead-letter topic
``T.G.dlq`` of consumer group ``G`` and redrives its messages to the topic they came from
(see :mod:`depot_common.dlq`); the broker is ``DEPOT_KAFKA_BOOTSTRAP``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import textwrap
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from aiokafka.errors import KafkaError

from depot_common.auth import mint_token
from depot_common.dlq import REDRIVE_BATCH, DeadLetterQueue, DlqError, MessageNotFound, full, line, redrive_group
from depot_common.kafka import make_producer

_SAFE_REPLAY = (
    "Replaying is safe: Depot consumers are idempotent (an inbox of event ids makes a duplicate a no-op, "
    "and version checks stop an older event from overwriting newer state)."
)


class _Formatter(argparse.HelpFormatter):
    """Wraps help text without breaking header names such as x-original-topic at their hyphens."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(
            " ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False
        )

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _token(args: argparse.Namespace) -> int:
    secret = os.environ.get("DEPOT_JWT_SECRET", "")
    if not secret:
        sys.stderr.write("depot token: DEPOT_JWT_SECRET is not set (source .devstack/env after make dev)\n")
        return 2
    token = mint_token(
        secret,
        args.owner,
        admin=args.admin,
        ttl=args.ttl,
        issuer=os.environ.get("DEPOT_JWT_ISSUER", ""),
        audience=os.environ.get("DEPOT_JWT_AUDIENCE", ""),
        roles_claim=os.environ.get("DEPOT_JWT_ROLES_CLAIM") or "roles",
    )
    if not args.link:
        sys.stdout.write(token + "\n")
        return 0
    api_url = os.environ.get("DEPOT_API_URL", "").rstrip("/")
    if not api_url.startswith(("http://", "https://")):
        sys.stderr.write("depot token: --link needs DEPOT_API_URL, the console's address (source .devstack/env)\n")
        return 2
    sys.stdout.write(f"{api_url}/#token={token}\n")
    return 0


# --- depot dlq ----------------------------------------------------------------------------

DlqCommand = Callable[[argparse.Namespace, list[str]], Coroutine[Any, Any, int]]


def _dlq(args: argparse.Namespace) -> int:
    name = f"depot dlq {args.dlq_command}"
    servers = [server.strip() for server in os.environ.get("DEPOT_KAFKA_BOOTSTRAP", "").split(",") if server.strip()]
    if not servers:
        sys.stderr.write(
            f"{name}: DEPOT_KAFKA_BOOTSTRAP is not set (comma list of host:port; source .devstack/env after make dev)\n"
        )
        return 2
    command: DlqCommand = args.dlq_run
    try:
        with _quiet("aiokafka"):  # its errors reach the operator as ours, once
            return asyncio.run(command(args, servers))
    except MessageNotFound as error:
        sys.stderr.write(f"{name}: {error}\n")
        return 1
    except DlqError as error:
        sys.stderr.write(f"{name}: {error}\n")
        return 2
    except (KafkaError, OSError) as error:
        sys.stderr.write(f"{name}: Kafka error: {error!r}\n")
        return 2


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


async def _dlq_list(args: argparse.Namespace, servers: list[str]) -> int:
    count = pending = 0
    async with (
        DeadLetterQueue(servers, args.topic, args.group) as dlq,
        contextlib.aclosing(dlq.messages(pending_only=args.pending)) as letters,
    ):
        async for letter in letters:
            sys.stdout.write((json.dumps(letter.summary()) if args.json else line(letter)) + "\n")
            count += 1
            pending += not letter.redriven
    sys.stderr.write(f"{count} message(s) in {dlq.topic}, {pending} not redriven\n")
    return 0


async def _dlq_show(args: argparse.Namespace, servers: list[str]) -> int:
    async with DeadLetterQueue(servers, args.topic, args.group) as dlq:
        letter = await dlq.get(args.partition, args.offset)
    sys.stdout.write(full(letter))
    return 0


async def _dlq_redrive(args: argparse.Namespace, servers: list[str]) -> int:
    partition: int | None = args.partition
    if args.offset is not None and partition is None:
        partition = 0

    def progress(done: int, total: int) -> None:
        if total > REDRIVE_BATCH:
            sys.stderr.write(f"depot dlq redrive: {done}/{total} redriven\n")

    async with DeadLetterQueue(servers, args.topic, args.group) as dlq:
        producer = make_producer(servers)
        try:
            await producer.start()
        except KafkaError as error:
            raise DlqError(f"cannot start a producer: {error!r}") from error
        try:
            report = await dlq.redrive(producer, partition=partition, through=args.offset, progress=progress)
        finally:
            await producer.stop()
    if report.count == 0:
        already = (
            f" (offset {args.offset} of partition {partition} was redriven before)" if args.offset is not None else ""
        )
        sys.stdout.write(f"nothing to redrive in {dlq.topic}{already}\n")
        return 0
    targets = ", ".join(sorted(report.targets))
    for number, offsets in sorted(report.redriven.items()):
        if offsets:
            sys.stdout.write(
                f"redriven {len(offsets)} message(s) from {dlq.topic} partition {number}"
                f" (offsets {offsets[0]}..{offsets[-1]}) to {targets}\n"
            )
    return 0


def _add_dlq(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = commands.add_parser(
        "dlq",
        formatter_class=_Formatter,
        help="inspect and redrive a consumer's dead-letter topic",
        description=(
            "Inspect and redrive the dead-letter topic TOPIC.GROUP.dlq, where consumer group GROUP puts "
            "messages of TOPIC it could not process (headers x-error, x-original-topic, x-original-partition, "
            "x-original-offset, x-attempts). The broker is DEPOT_KAFKA_BOOTSTRAP. " + _SAFE_REPLAY
        ),
        epilog="Exit status: 0 done (also when there is nothing to redrive), 1 no such message, 2 error.",
    )
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--topic", required=True, help="topic the consumer reads, e.g. depot.documents.v1")
    where.add_argument("--group", required=True, help="consumer group that dead-lettered, e.g. depot-indexer")
    sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="{list,show,redrive}")

    listing = sub.add_parser(
        "list",
        formatter_class=_Formatter,
        parents=[where],
        help="one line per dead letter",
        description=(
            "Print one line per message of TOPIC.GROUP.dlq: partition, offset, status (pending, or redriven), "
            "key, x-attempts, origin (x-original-topic:partition:offset) and x-error, shortened. "
            "Reads up to the end offsets at start, so it returns at once on an empty DLQ."
        ),
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per line, with the full error")
    listing.add_argument("--pending", action="store_true", help="only messages not redriven yet")
    listing.set_defaults(dlq_run=_dlq_list)

    show = sub.add_parser(
        "show",
        formatter_class=_Formatter,
        parents=[where],
        help="every detail of one dead letter",
        description="Print one message of TOPIC.GROUP.dlq: its key, every header, and its value (pretty JSON).",
    )
    show.add_argument("--offset", type=int, required=True, help="offset of the message in the DLQ")
    show.add_argument("--partition", type=int, default=0, help="DLQ partition (default 0)")
    show.set_defaults(dlq_run=_dlq_show)

    redrive = sub.add_parser(
        "redrive",
        formatter_class=_Formatter,
        parents=[where],
        help="re-publish dead letters to the topic they came from",
        description=(
            "Re-publish messages of TOPIC.GROUP.dlq, in DLQ order, to their x-original-topic and "
            "x-original-partition with the same key and value, their original headers without the x-* DLQ headers, and "
            "x-redriven-from: <dlq>:<partition>:<offset>. Progress is committed as offsets of consumer group "
            f"{redrive_group('GROUP')} on the DLQ after the broker acknowledged each batch, so no message is "
            "redriven twice by successive runs and none is skipped; run one redrive of a DLQ at a time. A message "
            "that fails again goes back to the DLQ as a new message. " + _SAFE_REPLAY
        ),
        epilog="Exit status: 0 done (also when there is nothing to redrive), 1 no such message, 2 error.",
    )
    which = redrive.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--offset",
        type=int,
        help="redrive up to and including this DLQ offset: the message at OFFSET and the pending ones before it",
    )
    which.add_argument("--all", action="store_true", help="redrive every pending message")
    redrive.add_argument(
        "--partition", type=int, help="only this DLQ partition (default: every partition; 0 with --offset)"
    )
    redrive.set_defaults(dlq_run=_dlq_redrive)
    dlq.set_defaults(run=_dlq)


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
    token.add_argument(
        "--link",
        action="store_true",
        help="print a web-console sign-in link, DEPOT_API_URL/#token=TOKEN, instead of the bare token",
    )
    token.set_defaults(run=_token)
    _add_dlq(commands)
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
