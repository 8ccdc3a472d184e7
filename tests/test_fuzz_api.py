"""The whole API fuzzed from its own OpenAPI schema with Schemathesis (property-based,
positive and negative data) against the real service (uvicorn in its own process, on
loopback) on SQLite and on PostgreSQL: no 5xx, no response outside the schema (status
code, content type, body), for every operation.

Bounded: ``HASHWATCH_FUZZ_EXAMPLES`` examples per operation and data mode (default 8,
deterministic), so the run stays within a minute per backend; raise it locally to explore
more (e.g. ``HASHWATCH_FUZZ_EXAMPLES=200``, and ``HASHWATCH_FUZZ_RANDOM=1`` for a random
walk instead of the fixed one).
"""

from __future__ import annotations

import os

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode  # noqa: E402

from conftest_pg import create_database, drop_database, server_url  # noqa: E402
from hashwatch.service.auth import create_key  # noqa: E402
from hashwatch.store import Store  # noqa: E402
from test_service import live_service  # noqa: E402

EXAMPLES = int(os.environ.get("HASHWATCH_FUZZ_EXAMPLES", "8"))
DETERMINISTIC = os.environ.get("HASHWATCH_FUZZ_RANDOM", "") != "1"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request, tmp_path_factory):
    """(base URL, admin key) of the real service on one backend, with a list to hit."""
    if request.param == "sqlite":
        db = str(tmp_path_factory.mktemp("fuzz") / "hw.db")
        admin_url = None
    else:
        pytest.importorskip("psycopg")
        admin_url = server_url()
        db = create_database(admin_url)
    with Store.open(db) as s:
        key = create_key(s, "fuzzer", "admin")
        s.create_list("fz")
    try:
        with live_service(db, rate_limit="0", refresh_interval="0.5",
                          decode_timeout="10") as (base, proc):
            yield base, key
    finally:
        if admin_url:
            drop_database(admin_url, db)
    # an unhandled error is logged by the service: none may have happened
    assert "unhandled error" not in proc.output, proc.output[-5000:]


def _operations(base: str, key: str) -> list:  # type: ignore[type-arg]
    cfg = schemathesis.Config.from_dict({
        "generation": {"mode": "all", "max-examples": EXAMPLES,
                       "deterministic": DETERMINISTIC},
        "headers": {"Authorization": f"Bearer {key}"},
    })
    schema = schemathesis.openapi.from_url(base + "/openapi.json", config=cfg)
    return [r.ok() for r in schema.get_all_operations()]


def test_api_never_5xx_and_always_as_documented(live):
    """Every operation, positive and negative data: zero failures of any check."""
    base, key = live
    headers = {"Authorization": f"Bearer {key}"}
    ops = _operations(base, key)
    assert len(ops) >= 25  # the schema lists the whole API
    failures: list[str] = []
    calls = [0]
    for op in ops:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=op.as_strategy(generation_mode=mode))
            @settings(deadline=None, suppress_health_check=list(HealthCheck),
                      max_examples=EXAMPLES, derandomize=DETERMINISTIC, database=None,
                      phases=[Phase.explicit, Phase.generate])  # no shrinking: report fast
            def run(case) -> None:  # type: ignore[no-untyped-def]
                calls[0] += 1
                case.call_and_validate(base_url=base, headers=headers, checks=CHECKS,
                                       timeout=60)

            try:
                run()
            except Unsatisfiable:
                continue  # nothing to make invalid in this operation (no parameters)
            except Exception as exc:  # every operation is tried; all failures reported
                failures.append(f"{op.label} [{mode.value}]: {str(exc)[:1500]}")
    print(f"fuzzed {len(ops)} operations with {calls[0]} requests")
    assert not failures, "\n\n".join(failures)
