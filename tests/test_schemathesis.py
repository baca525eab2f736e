"""Schemathesis against the app's own OpenAPI schema, in process over ASGI (bounded).

Every generated request, valid or not, must get an answer that is not a 5xx and that matches
the schema: documented status code, content type, headers and body. A couple of dozen examples
per operation and mode keep the whole run well under a minute on a small machine.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from authsvc.app import create_app
from tests.conftest import make_settings

MAX_EXAMPLES = 50
# Without a token every /admin operation stops at the gate (401) before its parameters are
# read: a few examples show that, tests/test_admin_api.py covers the inputs behind it.
ADMIN_EXAMPLES = 5
# Invalid requests may also be refused as too large (413): the body limit comes before parsing.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 404, 405, 406, 413, 415, 422, 429, 431]
            }
        }
    }
)


@pytest.fixture
def api_schema(seeded_sqlite_template: Path, tmp_path: Path) -> Any:
    target = tmp_path / "authsvc.db"
    shutil.copy(seeded_sqlite_template, target)
    app = create_app(make_settings(f"sqlite:///{target}", tmp_path / "data"))
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_schema(api_schema: Any, mode: GenerationMode) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 7
    failures = []
    for operation in operations:
        if mode == GenerationMode.POSITIVE and operation.path.startswith("/oauth/"):
            # Form endpoints whose valid inputs depend on each other (grant type, client
            # authentication) in ways a JSON schema cannot say: a schema-valid form is often a
            # correct RFC 6749 refusal. tests/test_oauth.py fuzzes them for 5xx instead.
            continue

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=ADMIN_EXAMPLES if operation.path.startswith("/admin") else MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate()

        try:
            check()
        except Unsatisfiable:
            # No parameters to break (GET /healthz): nothing to send in negative mode.
            assert mode == GenerationMode.NEGATIVE
        except Exception as exc:
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
