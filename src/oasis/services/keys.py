"""API keys: creation, revocation and the bearer -> project decision that every request goes through."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from oasis.errors import OasisError
from oasis.storage import projects
from oasis.storage.clock import now
from oasis.storage.db import Database
from oasis.storage.tables import ApiKey, Project

KEY_PREFIX = "sk-oasis-"
DEFAULT_PROJECT = "default"


@dataclass(frozen=True)
class Principal:
    project_id: str
    key_id: str | None


@dataclass(frozen=True)
class KeyInfo:
    id: str
    project: str
    redacted: str
    created_at: int
    revoked: bool


def hash_key(plaintext: str) -> str:
    # Keys are 256 random bits, so a fast hash is enough: nothing to brute-force, nothing to salt.
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def _redact(plaintext: str) -> str:
    return f"{plaintext[: len(KEY_PREFIX) + 2]}...{plaintext[-4:]}"


def _invalid_key(message: str) -> OasisError:
    return OasisError(401, message, code="invalid_api_key")


class KeyService:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._default_project_id: str | None = None

    async def create(self, project_name: str, *, manages_keys: bool = False) -> tuple[KeyInfo, str]:
        plaintext = _new_secret()
        async with self._db.session() as session:
            project = await projects.get_or_create_project(session, project_name)
            key = await projects.add_key(
                session, project.id, hash_key(plaintext), _redact(plaintext), manages_keys=manages_keys
            )
            await session.commit()
        return _info(key, project_name), plaintext

    async def list(self) -> list[KeyInfo]:
        async with self._db.session() as session:
            return [_info(key, project.name) for key, project in await projects.list_keys(session)]

    async def revoke(self, key_id: str) -> KeyInfo:
        async with self._db.session() as session:
            found = await projects.get_key(session, key_id)
            if found is None:
                raise OasisError(404, f"No API key with id {key_id!r}.", code="key_not_found")
            key, project = found
            if key.revoked_at is None:
                key.revoked_at = now()
                await session.commit()
            return _info(key, project.name)

    async def any_key_exists(self) -> bool:
        async with self._db.session() as session:
            return await projects.any_key_exists(session)

    async def authenticate(self, bearer: str | None, *, open_access: bool) -> Principal:
        """The project a request acts for.

        Until the first key is created the server is open (`open_access` says whether this client may use
        that: loopback, or --allow-unauthenticated) and everything lands in the `default` project. Once any
        key exists, even a revoked one, every request needs a live key.
        """
        # One round trip answers both questions on the hot path: whose key is this, and is the server open?
        key_hash = hash_key(bearer) if bearer else None
        row = self._db.sqlite_point_read(projects.LOOKUP_KEY_SQL, (key_hash,))
        if row is None:
            async with self._db.session() as session:
                row = await projects.lookup_key(session, key_hash)
        project_id, key_id, any_key = row
        if project_id is not None and key_id is not None:
            return Principal(project_id=project_id, key_id=key_id)
        if any_key:
            if not bearer:
                raise _invalid_key(
                    "You didn't provide an API key. You need to provide your API key in an Authorization "
                    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                )
            raise _invalid_key(f"Incorrect API key provided: {_redact(bearer)}.")
        if not open_access:
            raise _invalid_key(
                "This server has no API keys yet and only accepts unauthenticated requests from loopback. "
                "Create a key with `oasis keys create --project NAME`."
            )
        if self._default_project_id is None:
            async with self._db.session() as session:
                project = await projects.get_or_create_project(session, DEFAULT_PROJECT)
                await session.commit()
            self._default_project_id = project.id  # a project's id never changes: ask once
        return Principal(project_id=self._default_project_id, key_id=None)


class ProjectKeys:
    """The key API's view (OpenAI's Admin API shapes, `/v1/organization/projects/...`): a key sees its own project;
    a key made to manage keys (`oasis keys create --manage-keys`, like OpenAI's admin keys) also lists, creates and
    revokes that project's keys. Keys made over HTTP are plain ones: no key can make a more powerful key."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def _own(self, principal: Principal) -> tuple[ApiKey, Project]:
        """The caller's key and its project, read together."""
        if principal.key_id is None:
            raise OasisError(
                403,
                "Managing keys needs an API key, and this server has none yet: create the first with "
                "`oasis keys create --project NAME --manage-keys`, then sign in with it.",
                code="insufficient_permissions",
            )
        async with self._db.session() as session:
            found = await projects.get_key(session, principal.key_id)
        assert found is not None  # the request was just authenticated with this live key
        return found

    async def own_project(self, principal: Principal) -> dict[str, Any]:
        _, project = await self._own(principal)
        return _project_object(project.id, project.name, project.created_at)

    async def _check(self, principal: Principal, project_id: str) -> None:
        key, project = await self._own(principal)
        if project.id != project_id:
            raise OasisError(404, f"No project with id '{project_id}'.", param="project_id", code="project_not_found")
        if not key.manages_keys:
            raise OasisError(
                403,
                "This key cannot manage keys. Make one that can with `oasis keys create --project NAME --manage-keys`.",
                code="insufficient_permissions",
            )

    async def list(self, principal: Principal, project_id: str) -> list[dict[str, Any]]:
        await self._check(principal, project_id)
        async with self._db.session() as session:
            return [_key_object(key) for key in await projects.live_keys(session, project_id)]

    async def create(self, principal: Principal, project_id: str) -> dict[str, Any]:
        await self._check(principal, project_id)
        plaintext = _new_secret()
        async with self._db.session() as session:
            key = await projects.add_key(session, project_id, hash_key(plaintext), _redact(plaintext))
            await session.commit()
        return {**_key_object(key), "value": plaintext}  # the only time the secret is shown

    async def revoke(self, principal: Principal, project_id: str, key_id: str) -> dict[str, Any]:
        await self._check(principal, project_id)
        async with self._db.session() as session:
            found = await projects.get_key(session, key_id)
            if found is None or found[0].project_id != project_id or found[0].revoked_at is not None:
                raise OasisError(404, f"No API key with id '{key_id}' in this project.", param="key_id")
            found[0].revoked_at = now()
            await session.commit()
        return {"object": "organization.project.api_key.deleted", "id": key_id, "deleted": True}


def _new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _project_object(project_id: str, name: str, created_at: int) -> dict[str, Any]:
    return {
        "id": project_id,
        "object": "organization.project",
        "name": name,
        "created_at": created_at,
        "archived_at": None,
        "status": "active",
    }


def _key_object(key: ApiKey) -> dict[str, Any]:
    return {
        "object": "organization.project.api_key",
        "id": key.id,
        "name": None,
        "redacted_value": key.redacted,
        "created_at": key.created_at,
        "last_used_at": None,  # not recorded: writing on every request would cost every request
    }


def _info(key: ApiKey, project_name: str) -> KeyInfo:
    return KeyInfo(
        id=key.id,
        project=project_name,
        redacted=key.redacted,
        created_at=key.created_at,
        revoked=key.revoked_at is not None,
    )
