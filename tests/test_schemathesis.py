"""Property-based run of OpenAI's own spec over the Models and Files operations against `oasis serve`.

Checks: no request makes a 5xx, and every documented reply conforms to the spec's response schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from oasis.protocol.spec import load_openapi_spec
from tests.server_process import ServerProcess, oasis_env, oasis_server

schema = schemathesis.openapi.from_dict(load_openapi_spec()).include(tag=["Models", "Files"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, postgres_url: str | None) -> Iterator[ServerProcess]:
    import asyncio

    from tests.conftest import _empty_postgres

    if postgres_url is not None:
        asyncio.run(_empty_postgres(postgres_url))
    data: Path = tmp_path_factory.mktemp("schemathesis") / "data"
    with oasis_server(data, oasis_env(postgres_url)) as running:
        yield running


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_models_and_files_conform_to_the_spec(case: schemathesis.Case, server: ServerProcess) -> None:
    case.call_and_validate(
        base_url=f"{server.base_url}/v1",
        headers={"Authorization": "Bearer sk-schemathesis"},
        checks=[not_a_server_error, response_schema_conformance],
    )


# Vector stores and batches follow today's API where it differs from the 2.0.0 spec (nullable `last_error`, null
# `first_id` on empty lists, new `last_error` codes: see protocol/extensions.py), so only "never a 5xx" here.
vector_store_schema = schemathesis.openapi.from_dict(load_openapi_spec()).include(
    tag=["Vector Stores", "Embeddings", "Batch"]
)


@vector_store_schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_vector_stores_embeddings_and_batches_never_fail_with_a_5xx(
    case: schemathesis.Case, server: ServerProcess
) -> None:
    case.call_and_validate(
        base_url=f"{server.base_url}/v1",
        headers={"Authorization": "Bearer sk-schemathesis"},
        checks=[not_a_server_error],
        timeout=120,  # the spec's own example embeds 2,048 texts: seconds on two cores
    )
