"""The `oasis` command: serve, worker, keys. Progress and errors go to stderr; results to stdout."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from oasis import __version__
from oasis.errors import OasisError
from oasis.services.keys import KeyService
from oasis.settings import Settings, config_file, load_settings
from oasis.storage.db import Database


def _add_settings_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="data folder (default: $OASIS_DATA_DIR, else per-user)")
    parser.add_argument("--config", type=Path, help="YAML config file (models:, server:, files:, …)")


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides: dict[str, Any] = dict(extra)
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    config = config_file(args.config, args.data_dir)
    if config is not None:
        logging.getLogger("oasis").info("config file: %s", config)
    return load_settings(config, **overrides)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _with_keys(settings: Settings, action: str, argument: str | None) -> int:
    db = Database(settings.sqlalchemy_url)
    try:
        await db.migrate()
        keys = KeyService(db)
        if action == "create":
            assert argument is not None
            info, plaintext = await keys.create(argument)
            print(f"created key {info.id} for project {info.project!r}; it is shown only once:", file=sys.stderr)
            print(plaintext)
        elif action == "list":
            for info in await keys.list():
                state = "revoked" if info.revoked else "active"
                print(f"{info.id}\t{info.project}\t{info.redacted}\t{state}")
        elif action == "revoke":
            assert argument is not None
            info = await keys.revoke(argument)
            print(f"revoked key {info.id} of project {info.project!r}", file=sys.stderr)
        elif action == "exists":
            return 0 if await keys.any_key_exists() else 1
        return 0
    finally:
        await db.close()


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from oasis.app import create_app

    server: dict[str, Any] = {key: value for key in ("host", "port") if (value := getattr(args, key)) is not None}
    if args.allow_unauthenticated:
        server["allow_unauthenticated"] = True
    settings = _settings(args, server=server)
    host = settings.server.host
    exposed = not _is_loopback(host) and not settings.server.allow_unauthenticated
    if exposed and asyncio.run(_with_keys(settings, "exists", None)) != 0:
        print(
            f"refusing to listen on {host}: no API key exists, so anyone who can reach it could use it. "
            "Create one with `oasis keys create --project NAME`, or pass --allow-unauthenticated.",
            file=sys.stderr,
        )
        return 2
    print(
        f"oasis {__version__}: data in {settings.data_dir}, listening on {host}:{settings.server.port}",
        file=sys.stderr,
    )
    uvicorn.run(create_app(settings), host=host, port=settings.server.port, log_level="info")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from oasis.app import run_worker

    settings = _settings(args)
    print(f"oasis {__version__} worker: database {settings.sqlalchemy_url.split('@')[-1]}", file=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_worker(settings))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oasis", description="The whole OpenAI API, self-hosted.")
    parser.add_argument("--version", action="version", version=f"oasis {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API server")
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="while no API key exists, accept requests from any address (default: loopback only)",
    )
    _add_settings_args(serve)

    worker = commands.add_parser(
        "worker", help="run background jobs (vector-store ingestion) against the configured database, no HTTP"
    )
    _add_settings_args(worker)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key; prints it as the last line of stdout")
    create.add_argument("--project", required=True, help="project the key belongs to (created if new)")
    _add_settings_args(create)
    _add_settings_args(keys.add_parser("list", help="list keys (never their secrets)"))
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    _add_settings_args(revoke)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    # Migration chatter helps when a server starts, not on every `oasis keys` call.
    logging.getLogger("alembic").setLevel(logging.INFO if args.command == "serve" else logging.WARNING)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "worker":
            return _worker(args)
        settings = _settings(args)
        argument = getattr(args, "project", None) or getattr(args, "key_id", None)
        return asyncio.run(_with_keys(settings, args.keys_command, argument))
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        print(f"oasis: {exc}", file=sys.stderr)
        return 2
    except OasisError as exc:
        print(f"oasis: {exc.message}", file=sys.stderr)
        return 1
