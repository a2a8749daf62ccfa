"""Conditions and values on a job row's lease columns (`lease_owner`, `lease_expires_at`); workers/leases.py
claims and renews leases with them, repositories write only while the lease is held.

Lease deadlines are written and compared in the database's clock, never a host's: replicas and workers on
several hosts share one PostgreSQL, and a host whose clock ran ahead would take over every lease still held
(or one behind would keep a dead worker's job for as long as it lagged)."""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from sqlalchemy import ColumnElement, Float, case, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


class database_now(FunctionElement[float]):
    """The database's clock as Unix seconds (a float), read when the statement runs."""

    type = Float()
    inherit_cache = True


@compiles(database_now)
def _postgres_now(element: database_now, compiler: SQLCompiler, **kw: Any) -> str:
    # the statement's start: one value for every row it compares (an index can bound it), unlike clock_timestamp()
    return "EXTRACT(EPOCH FROM statement_timestamp())"


@compiles(database_now, "sqlite")
def _sqlite_now(element: database_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"  # to the millisecond


def lease_until(seconds: float) -> ColumnElement[float]:
    """A lease deadline `seconds` from now, in the database's clock."""
    return database_now() + seconds


def claimable(table: Any) -> list[ColumnElement[bool]]:
    return [or_(table.lease_expires_at.is_(None), table.lease_expires_at < database_now())]


def held_by(table: Any, seq: int, owner: str) -> list[ColumnElement[bool]]:
    """Conditions for a write that only the lease holder may make (it fails once the lease is taken over)."""
    return [table.seq == seq, table.lease_owner == owner]


def handed_back(table: Any) -> dict[str, Any]:
    """Values that free a lease its holder gives up because its process is stopping: the job is free at once, and
    the lease does not count among the attempts that guard against a job that fells its worker (a shutdown is not
    a crash)."""
    return {
        "lease_owner": None,
        "lease_expires_at": None,
        "attempts": case((table.attempts > 0, table.attempts - 1), else_=0),
    }


def renewal(seconds: float) -> dict[str, ColumnElement[float]]:
    return {"lease_expires_at": lease_until(seconds)}


def process_name(kind: str) -> str:
    """A lease holder's name that tells an operator (and the cluster tests) which process holds a job: its kind,
    host and pid, made unique."""
    host = socket.gethostname().split(".")[0][-20:] or "host"  # the tail: what tells Kubernetes pods apart
    return f"{kind}-{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def execution_name(holder: str) -> str:
    """The lease owner for one execution of a job by `holder` (a worker loop, an API process): each execution
    has its own, so an earlier execution's writes or release can never touch a later one's lease."""
    return f"{holder}:{uuid.uuid4().hex[:8]}"
