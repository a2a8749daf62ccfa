"""Conditions and values on a job row's lease columns (`lease_owner`, `lease_expires_at`); workers/leases.py
claims and renews leases with them, repositories write only while the lease is held."""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any

from sqlalchemy import ColumnElement, case, or_


def claimable(table: Any, moment: float | ColumnElement[float]) -> list[ColumnElement[bool]]:
    return [or_(table.lease_expires_at.is_(None), table.lease_expires_at < moment)]


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


def renewal(seconds: float) -> dict[str, float]:
    return {"lease_expires_at": time.time() + seconds}


def process_name(kind: str) -> str:
    """A lease holder's name that tells an operator (and the cluster tests) which process holds a job: its kind,
    host and pid, made unique."""
    host = socket.gethostname().split(".")[0][-20:] or "host"  # the tail: what tells Kubernetes pods apart
    return f"{kind}-{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def execution_name(holder: str) -> str:
    """The lease owner for one execution of a job by `holder` (a worker loop, an API process): each execution
    has its own, so an earlier execution's writes or release can never touch a later one's lease."""
    return f"{holder}:{uuid.uuid4().hex[:8]}"
