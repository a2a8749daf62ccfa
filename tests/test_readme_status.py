"""The README's table of the 64 operations is derived from the vendored spec and matches what the app routes:
an operation is "not yet" exactly when no route answers it."""

from __future__ import annotations

import re
from pathlib import Path

from oasis.app import create_app
from oasis.protocol.spec import load_openapi_spec
from oasis.settings import load_settings

README = Path(__file__).resolve().parents[1] / "README.md"
ROW = re.compile(
    r"^\| (?P<area>[^|]+) \| `(?P<method>[A-Z]+) (?P<path>/v1/[^`]+)` \| (?P<op>\w+) \| (?P<status>[^|]+) \|$"
)


def _shape(path: str) -> str:
    """A path with its parameter names blanked: routes may name a parameter differently from the spec."""
    return re.sub(r"\{[^}]+\}", "{}", path)


def _spec_operations() -> dict[str, tuple[str, str, str]]:
    spec = load_openapi_spec()
    operations = {}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "operationId" in operation:
                operations[operation["operationId"]] = (operation["tags"][0], method.upper(), "/v1" + path)
    return operations


def _readme_rows() -> dict[str, tuple[str, str, str, str]]:
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        found = ROW.match(line)
        if found:
            rows[found["op"]] = (found["area"], found["method"], found["path"], found["status"].strip())
    return rows


def _routed(tmp_path: Path) -> set[tuple[str, str]]:
    app = create_app(load_settings(None, data_dir=tmp_path, defaults=False), engine_factories={})
    # The app's own OpenAPI document lists every operation it routes.
    return {(method.upper(), _shape(path)) for path, item in app.openapi()["paths"].items() for method in item}


def test_readme_lists_every_operation_of_the_spec_once() -> None:
    spec = _spec_operations()
    rows = _readme_rows()
    assert len(spec) == 64
    assert set(rows) == set(spec)
    for operation, (area, method, path) in spec.items():
        assert rows[operation][:3] == (area, method, path), operation


def test_readme_status_matches_the_routes(tmp_path: Path) -> None:
    routed = _routed(tmp_path)
    for operation, (_, method, path, status) in _readme_rows().items():
        answered = (method, _shape(path)) in routed
        if status == "not yet":
            assert not answered, f"{operation} is routed but the README says 'not yet'"
        else:
            assert answered, f"{operation} is not routed but the README says {status!r}"
            assert status == "done" or status.startswith(("done (", "partial (")), (operation, status)
