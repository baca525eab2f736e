"""Optional OpenTelemetry tracing: spans for requests and database statements.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, and then
it needs the `tracing` extra (`pip install 'authsvc[tracing]'`). When off nothing here imports
OpenTelemetry's SDK or instrumentations and the app gets no extra middleware, so it costs
nothing. When on, the maintained instrumentations do the work:

- FastAPI (ASGI): one server span per request, named after the route template; the request id
  (X-Request-ID, the `request_id` of every log line) is set on it as `authsvc.request_id`, so
  a log line leads to its trace and a trace to its log lines;
- SQLAlchemy: one span per statement on the engine's connections;
- asyncpg: one span per statement on PostgreSQL, the fast lane's included.

The exporter is OTLP over HTTP/protobuf and is configured by OpenTelemetry's own variables
(OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME,
OTEL_TRACES_SAMPLER, OTEL_BSP_*...), not by AUTHSVC_ settings: collectors and sidecars set
those for every service alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from authsvc.config import ConfigError
from authsvc.store.db import Database

ENDPOINT_VARIABLES: Final = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
REQUEST_ID_ATTRIBUTE: Final = "authsvc.request_id"


def configured(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for tracing."""
    return any(environ.get(name) for name in ENDPOINT_VARIABLES)


def provider_from_environment() -> Any:
    """A TracerProvider exporting over OTLP/HTTP in batches, configured by OTEL_* variables."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ConfigError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but tracing is not installed: "
            "pip install 'authsvc[tracing]' (or unset the variable)"
        ) from exc
    from authsvc import __version__

    attributes = {"service.version": __version__}
    # Named authsvc unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name it (explicit
    # attributes would win over the environment's).
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if not named:
        attributes["service.name"] = "authsvc"
    resource = Resource.create(attributes)
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


@dataclass
class Tracing:
    """The instrumentation of one app; `close` flushes the spans and takes it off again."""

    provider: Any
    _undo: list[Callable[[], None]] = field(default_factory=list)

    def link_request_id(self, request_id: str) -> None:
        """For RequestObserver: put the request id on the request's server span."""
        from opentelemetry import trace

        trace.get_current_span().set_attribute(REQUEST_ID_ATTRIBUTE, request_id)

    def close(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        flush = getattr(self.provider, "force_flush", None)
        if flush is not None:
            flush()


def instrument(app: Any, database: Database, provider: Any) -> Tracing:
    """Trace `app`'s requests and `database`'s statements through `provider`."""
    try:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    except ImportError as exc:
        raise ConfigError(
            "tracing is asked for but its instrumentations are not installed: "
            "pip install 'authsvc[tracing]'"
        ) from exc
    tracing = Tracing(provider)
    # No spans for each ASGI receive and send: one span per request is the useful grain.
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, exclude_spans=["receive", "send"]
    )
    tracing._undo.append(lambda: FastAPIInstrumentor.uninstrument_app(app))
    sqlalchemy = SQLAlchemyInstrumentor()
    # The instrumentation declares SQLAlchemy < 2.1 but needs only the cursor-execute events,
    # which 2.1 keeps; tests/test_tracing.py checks that statements become spans.
    sqlalchemy.instrument(
        engine=database.engine.sync_engine, tracer_provider=provider, skip_dep_check=True
    )
    tracing._undo.append(sqlalchemy.uninstrument)
    if database.dialect == "postgresql":
        asyncpg = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
        asyncpg.instrument(tracer_provider=provider)
        tracing._undo.append(asyncpg.uninstrument)
    return tracing
