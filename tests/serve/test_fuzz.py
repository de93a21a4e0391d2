"""Fuzzing every operation from the server's own OpenAPI schema: no request gets a 5xx.

Each operation gets schema-valid bodies (which reach the engine) and schema-breaking ones
(which must be refused as 400s in OpenAI's error shape).
"""

import pytest
import schemathesis
from conftest import start_server
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

EXAMPLES_PER_MODE = 25


@pytest.fixture(scope="module")
def fuzzed_server(model_dir):
    # a short context bounds the work a valid fuzzed request can ask for
    server = start_server(model_dir, engine=dict(max_model_len=48, max_num_seqs=8))
    yield server
    server.stop()


def test_no_request_gets_a_server_error(fuzzed_server):
    schema = schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/chat/completions", "POST /v1/completions",
                                               "POST /v1/embeddings", "GET /v1/models"}
    checked = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES_PER_MODE, deadline=None, suppress_health_check=list(HealthCheck),
                      database=None)
            def call(case):
                response = case.call(timeout=60)
                assert response.status_code < 500, (operation.label, case.body, response.text)
                if response.status_code >= 400:
                    error = response.json()["error"]
                    assert set(error) == {"message", "type", "param", "code"} and error["message"]
                checked.append(response.status_code)

            try:
                call()
            except Unsatisfiable:  # an operation without inputs has no invalid request to send
                assert mode == GenerationMode.NEGATIVE and not operation.label.startswith("POST")
    assert len(checked) > 100 and any(s == 200 for s in checked) and any(s == 400 for s in checked)
