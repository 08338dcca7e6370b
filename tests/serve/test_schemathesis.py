"""Property-based requests generated from the server's own OpenAPI schema: none may get a 5xx.

Bounded for CI (a few dozen examples per operation). The upstream is the instant stub, so a 5xx here is
the server's fault, not the LM's.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from dspyc.serve.app import create_app
from dspyc.serve.pool import ProgramPool


@pytest.fixture
def api_schema(serve_settings, store):
    pool = ProgramPool(serve_settings, loader=store.loader, resolver=store.resolver, catalog=store.catalog)
    pool.start(poll=False)
    app = create_app(serve_settings, pool)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_no_server_errors(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            for headers in ({"Authorization": "Bearer k1"}, {}):
                response = case.call(headers=headers)
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
                )
                case.validate_response(response, checks=[not_a_server_error])

        check()
    # the generated requests did reach the programs, not only the edges
    api_schema.app.state.server.log._f.flush()
    statuses = [
        json.loads(line)["status"] for line in api_schema.app.state.server.log.path.read_text().split("\n") if line
    ]
    assert statuses.count(200) > 0
