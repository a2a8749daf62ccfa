"""Request dependencies: the container, the caller's project, list parameters (DESIGN.md habit 6)."""

from __future__ import annotations

import functools
import ipaddress
from typing import Annotated, Literal

from fastapi import Depends, Query, Request

from oasis.container import Container
from oasis.engines.registry import serve_for_project
from oasis.services.keys import Principal
from oasis.services.rate_limits import TOKEN_PATHS, estimate_tokens
from oasis.storage.pagination import PageRequest


async def get_container(request: Request) -> Container:
    # async on purpose: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per request
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


@functools.lru_cache(maxsize=1024)  # parsing an address costs more than the rest of the key check; hosts repeat
def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def get_principal(request: Request, container: ContainerDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" and token.strip() else None
    client_host = request.client.host if request.client else None
    open_access = container.settings.server.allow_unauthenticated or _is_loopback(client_host)
    principal = await container.keys.authenticate(bearer, open_access=open_access)
    serve_for_project(principal.project_id)  # the project's own fine-tunes resolve for the rest of the request
    if container.rate_limits.enabled:
        tokens = 0
        if request.method == "POST" and request.url.path in TOKEN_PATHS:
            try:
                # request.json() is the body FastAPI parsed already (cached): no second copy of a large body
                tokens = estimate_tokens(request.url.path, await request.json())
            except (ValueError, RecursionError):
                tokens = 0  # not JSON (or nested past the parser): the endpoint's validation answers it
        # The middleware puts these on the reply, streamed or not.
        request.state.rate_limit_headers = await container.rate_limits.admit(principal, tokens)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]

Order = Literal["asc", "desc"]


async def page_params(
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Order = "desc",
    after: str | None = None,
    before: str | None = None,
) -> PageRequest:
    return PageRequest(limit=limit, order=order, after=after, before=before)


PageDep = Annotated[PageRequest, Depends(page_params)]


def _include(
    bracketed: Annotated[list[str], Query(alias="include[]", default_factory=list)],
    plain: Annotated[list[str], Query(alias="include", default_factory=list)],
) -> list[str]:
    """`include[]=a&include[]=b` as today's SDK sends it, or `include=a,b` as the May-2024 SDK's `extra_query`."""
    return bracketed + [value for values in plain for value in values.split(",") if value]


IncludeDep = Annotated[list[str], Depends(_include)]
