"""Optional OpenTelemetry tracing: request and statement spans with the request id, off by
default at no cost, and exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from authsvc.app import create_app
from authsvc.clock import MovableClock
from authsvc.config import Settings
from authsvc.observability.tracing import REQUEST_ID_ATTRIBUTE
from tests.conftest import PASSWORD, Harness
from tests.live import clean_env, live_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(
    settings: Settings, clock: MovableClock, spans: InMemorySpanExporter
) -> AsyncIterator[Harness]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    app = create_app(settings, clock, tracer_provider=provider)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Harness(client=client, state=app.state.authsvc, clock=clock)
    provider.shutdown()


async def test_requests_and_statements_are_spans_carrying_the_request_id(
    traced: Harness, spans: InMemorySpanExporter
) -> None:
    await traced.create_user()
    spans.clear()
    response = await traced.client.post(
        "/auth/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"X-Request-ID": "req-123"},
    )
    assert response.status_code == 200
    finished = spans.get_finished_spans()
    [server] = [s for s in finished if s.kind == SpanKind.SERVER]
    assert server.name == "POST /auth/login"
    assert server.attributes is not None
    assert server.attributes[REQUEST_ID_ATTRIBUTE] == "req-123"
    statements = [s for s in finished if s.kind == SpanKind.CLIENT]
    assert statements, [s.name for s in finished]
    trace_id = server.context.trace_id
    assert all(s.context.trace_id == trace_id for s in statements)
    # A generated request id is the one the client is told.
    spans.clear()
    me = await traced.me(response.json()["access_token"])
    [server] = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert server.attributes is not None
    assert server.attributes[REQUEST_ID_ATTRIBUTE] == me.headers["x-request-id"]
    assert server.name == "GET /auth/me"


def test_tracing_is_off_and_not_even_imported_without_an_endpoint(
    settings: Settings,
) -> None:
    script = (
        "import sys\n"
        "from authsvc.app import create_app\n"
        "from tests.conftest import make_settings\n"
        f"app = create_app(make_settings({settings.database_url!r}, {str(settings.data_dir)!r}))\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', "
        "'opentelemetry.instrumentation')))\n"
        "assert not loaded, loaded\n"
        "assert not getattr(app, '_is_instrumented_by_opentelemetry', False)\n"
    )
    env = clean_env()
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


class _Collector:
    """An OTLP/HTTP endpoint that keeps what it receives."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                outer.paths.append(self.path)
                outer.bodies.append(self.rfile.read(length))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def collector() -> Iterator[_Collector]:
    c = _Collector()
    c.thread.start()
    try:
        yield c
    finally:
        c.server.shutdown()
        c.server.server_close()


@pytest.mark.slow
def test_serve_exports_spans_to_the_otlp_endpoint(tmp_path: Path, collector: _Collector) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "authsvc-test",
    }
    with live_server(tmp_path, environ=env) as base:
        answer = httpx.get(f"{base}/auth/me", headers={"X-Request-ID": "trace-me"}, timeout=30)
        assert answer.status_code == 401
    # The server flushed its spans as it stopped.
    assert collector.paths and set(collector.paths) == {"/v1/traces"}
    names: list[str] = []
    request_ids: list[str] = []
    services: set[str] = set()
    for body in collector.bodies:
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    services.add(attribute.value.string_value)
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    names.append(span.name)
                    request_ids += [
                        a.value.string_value
                        for a in span.attributes
                        if a.key == REQUEST_ID_ATTRIBUTE
                    ]
    assert "GET /auth/me" in names
    assert "trace-me" in request_ids
    assert services == {"authsvc-test"}
