"""Schemathesis over the node's OpenAPI spec against a real node process: no input gives a 5xx.

Bounded (a few examples per operation) so it runs in CI. The SSE stream is left out (it never
ends by design); long-polls are capped to a fraction of a second for the run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from api.testing import LocalTestnet

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

EXAMPLES_PER_OPERATION = 25


def test_no_input_gives_a_server_error(tmp_path: Path) -> None:
    with LocalTestnet(tmp_path, validators=1, env={"LAYERCHAIN_LONG_POLL_MAX_S": "0.2"}) as net:
        net.start_all()
        net.wait_healthy()
        url = net.url(0)
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        tested = []
        for operation in operations:
            if operation.path == "/api/v1/events":
                continue  # a never-ending stream by design

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def run(case: schemathesis.Case) -> None:
                response = case.call(base_url=url, timeout=15)
                case.validate_response(response, checks=[not_a_server_error])

            run()
            tested.append(f"{operation.method.upper()} {operation.path}")
        print("fuzzed:", len(tested), tested)
        assert len(tested) >= 20, tested
        assert net.health(0) is not None, "the node must still be healthy after the fuzzing"
