"""The `oasis` command: serve, worker, keys, models. Progress and errors go to stderr; results to stdout."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oasis import __version__
from oasis.errors import OasisError
from oasis.logs import configure_logging
from oasis.services.keys import DEFAULT_PROJECT, KeyService
from oasis.settings import ConfigError, Settings, config_file, load_settings
from oasis.storage.db import Database

log = logging.getLogger("oasis")


def _add_settings_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="data folder (default: $OASIS_DATA_DIR, else per-user)")
    parser.add_argument(
        "--config", type=Path, help="YAML config file (default: $OASIS_CONFIG, else config.yaml in the data dir)"
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="json: one JSON object a line, for collectors"
    )


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides: dict[str, Any] = dict(extra)
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    config = config_file(args.config, args.data_dir)
    args.config_used = config
    if config is not None:
        log.info("config file: %s", config)
    return load_settings(config, **overrides)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _without_password(url: str) -> str:
    """The URL without its user info (`user:password@`), with a scheme or without one."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url.rpartition("@")[2]
    return f"{scheme}://{rest.rpartition('@')[2]}"


def _database_name(settings: Settings) -> str:
    """The database a command uses, without a password."""
    if settings.database_url is None:
        return str(settings.data_dir / "oasis.db")
    return _without_password(settings.sqlalchemy_url)


def _check_data_dir(settings: Settings) -> None:
    """The data folder (and the local blobs folder in it) exists or can be made, and can be written: else one
    line naming it, rather than a traceback from the first write."""
    folders = [settings.data_dir] if settings.database_url is None else []
    if settings.blobs.kind == "local":
        folders.append(settings.blobs_dir)
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise ConfigError(
                f"data_dir {settings.data_dir}: {folder} cannot be written ({exc.strerror or exc})"
            ) from None
    database = settings.data_dir / "oasis.db"
    if settings.database_url is None and database.exists() and not os.access(database, os.R_OK | os.W_OK):
        raise ConfigError(f"data_dir {settings.data_dir}: {database} cannot be read and written")


async def _open_database(settings: Settings) -> Database:
    """The database, migrated to this version's schema; one line naming it (without a password) when it cannot
    be reached, its driver is missing or its URL does not parse."""
    import alembic.util
    import sqlalchemy.exc

    try:
        db = Database(settings.sqlalchemy_url)
    except (sqlalchemy.exc.ArgumentError, ImportError) as exc:
        raise ConfigError(
            f"database_url: oasis runs on SQLite or PostgreSQL; this URL's driver is not here ({exc})"
        ) from None
    try:
        await db.migrate()
    # TypeError: a query option the driver does not take (asyncpg and ?sslmode=); CommandError: alembic's
    except (OSError, ImportError, TypeError, sqlalchemy.exc.SQLAlchemyError, alembic.util.CommandError) as exc:
        await db.close()
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise ConfigError(f"cannot use the database {_database_name(settings)}: {reason}") from None
    return db


async def _with_keys(settings: Settings, action: str, argument: str | None, *, manages_keys: bool = False) -> int:
    if action in ("list", "revoke") and settings.database_url is None and not (settings.data_dir / "oasis.db").exists():
        # Listing or revoking in a folder that holds no database is a mistyped --data-dir, not an empty list.
        print(f"oasis: no oasis database in {settings.data_dir} (give the server's --data-dir)", file=sys.stderr)
        return 2
    _check_data_dir(settings)
    db = await _open_database(settings)
    try:
        keys = KeyService(db)
        if action != "exists":
            print(f"database: {_database_name(settings)}", file=sys.stderr)
        if action == "create":
            assert argument is not None
            info, plaintext = await keys.create(argument, manages_keys=manages_keys)
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


async def _check_blobs(settings: Settings) -> None:
    """A blob store that cannot be used (S3 keys refused, no bucket) stops the start with one line, rather than
    failing the first upload with a 500; so does a Redis that cannot be reached, or without the package to reach
    it."""
    from oasis.blobs import blob_store

    if settings.redis_url is not None:
        try:
            import redis.asyncio  # noqa: F401
        except ModuleNotFoundError:
            raise ConfigError("redis_url needs the redis package: pip install 'oasis[redis]'") from None
        from oasis.storage.rate_buckets import RedisBuckets

        url = settings.redis_url.get_secret_value()
        try:
            buckets = RedisBuckets(url)
        except ValueError as exc:  # not a Redis URL at all (no scheme, a port that is not a number)
            raise ConfigError(f"redis_url: {_without_password(url)}: {exc}") from None
        try:
            await buckets.check(_without_password(url))
        finally:
            await buckets.close()
    store = blob_store(settings)
    try:
        await store.check()
    finally:
        await store.close()


def _serve(args: argparse.Namespace) -> int:
    from oasis.app import create_app
    from oasis.http_server import bind, serve

    server: dict[str, Any] = {key: value for key in ("host", "port") if (value := getattr(args, key)) is not None}
    if args.allow_unauthenticated:
        server["allow_unauthenticated"] = True
    settings = _settings(args, server=server)
    host = settings.server.host
    exposed = not _is_loopback(host) and not settings.server.allow_unauthenticated
    # Opening the database here also stops the start with one line when it (or the data folder) cannot be used.
    keys_exist = asyncio.run(_with_keys(settings, "exists", None)) == 0
    if exposed and not keys_exist:
        print(
            f"refusing to listen on {host}: no API key exists, so anyone who can reach it could use it. "
            "Create one with `oasis keys create --project NAME`, or pass --allow-unauthenticated.",
            file=sys.stderr,
        )
        return 2
    asyncio.run(_check_blobs(settings))
    try:  # bound before anything loads, so that a port in use stops the start at once
        listening = bind(host, settings.server.port)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{settings.server.port} ({exc.strerror or exc}): see server.host, server.port,"
            " --host, --port"
        ) from None
    port = listening.getsockname()[1]  # port 0: the one the system chose
    log.info("oasis %s: data in %s, listening on %s:%s", __version__, settings.data_dir, host, port)
    return serve(create_app(settings), host=host, port=port, sock=listening)


async def _reach_database(settings: Settings) -> None:
    await (await _open_database(settings)).close()


def _live_states(settings: Settings) -> dict[str, str] | None:
    """Each model's state as the server on the configured address reports it, or None when none answers."""
    import httpx

    host = "127.0.0.1" if settings.server.host in ("0.0.0.0", "::") else settings.server.host
    if ":" in host:  # an IPv6 address goes in brackets in a URL
        host = f"[{host}]"
    try:
        health = httpx.get(f"http://{host}:{settings.server.port}/health", timeout=2).json()
        return {model["id"]: model["state"] for model in health["models"]}
    except (httpx.HTTPError, httpx.InvalidURL, ValueError, KeyError, TypeError):
        return None


def _models(settings: Settings) -> int:
    from oasis.app import engine_setup
    from oasis.engines.options import weights_source

    _, specs = engine_setup(settings)
    live = _live_states(settings)
    if live is None:
        print(f"no server answers on {settings.server.host}:{settings.server.port}; states unknown", file=sys.stderr)
    print("id\tengine\tstate\tweights\taliases")
    for spec in specs:
        state = (live or {}).get(spec.id, "not running")
        print(f"{spec.id}\t{spec.engine}\t{state}\t{weights_source(spec)}\t{','.join(spec.aliases)}")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from oasis.app import ModelsFailed, run_worker

    settings = _settings(args)
    _check_data_dir(settings)
    asyncio.run(_reach_database(settings))
    asyncio.run(_check_blobs(settings))
    log.info("oasis %s worker: database %s", __version__, _database_name(settings))
    try:
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, SIGTERM
            asyncio.run(run_worker(settings))
    except ModelsFailed as exc:
        print(f"oasis worker: {exc}", file=sys.stderr)
        return 1
    log.info("oasis worker stopped")
    return 0


def _project_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("a project name must not be blank")
    return text


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
        "worker",
        help="run background jobs (ingestion, batches, runs, fine-tuning) against the configured database, no HTTP",
    )
    _add_settings_args(worker)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key; prints it as the last line of stdout")
    create.add_argument(
        "--project",
        type=_project_name,
        default=DEFAULT_PROJECT,
        help=f"project the key belongs to, created if new (default {DEFAULT_PROJECT!r}: the project that objects "
        "made before the first key live in)",
    )
    create.add_argument(
        "--manage-keys",
        action="store_true",
        help="the key may also list, create and revoke its project's keys over HTTP (the dashboard's Server page)",
    )
    _add_settings_args(create)
    _add_settings_args(keys.add_parser("list", help="list keys (never their secrets)"))
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    _add_settings_args(revoke)

    models = commands.add_parser(
        "models", help="list the models the server serves: engine, weights, aliases, and state if it is running"
    )
    models.add_argument("--host", default=None, help="where the server to ask for states listens (default: config)")
    models.add_argument("--port", type=int, default=None, help="its port (default: config, else 8000)")
    _add_settings_args(models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    # Migration chatter helps when a server starts, not on every `oasis keys` call.
    logging.getLogger("alembic").setLevel(logging.INFO if args.command == "serve" else logging.WARNING)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "worker":
            return _worker(args)
        if args.command == "models":
            if args.log_level == "info":  # the table is the answer; the start-up lines would repeat it
                logging.getLogger("oasis").setLevel(logging.WARNING)
            server = {key: value for key in ("host", "port") if (value := getattr(args, key)) is not None}
            return _models(_settings(args, server=server))
        settings = _settings(args)
        argument = getattr(args, "project", None) or getattr(args, "key_id", None)
        manages_keys = bool(getattr(args, "manage_keys", False))
        return asyncio.run(_with_keys(settings, args.keys_command, argument, manages_keys=manages_keys))
    except (ConfigError, FileNotFoundError) as exc:
        # Mistakes found after reading the file (a model's options, its weights) name the file too.
        where = getattr(args, "config_used", None)
        message = str(exc) if where is None or str(where) in str(exc) else f"{where}: {exc}"
        print(f"oasis: {message}", file=sys.stderr)
        return 2
    except OasisError as exc:
        print(f"oasis: {exc.message}", file=sys.stderr)
        return 1
