"""OpenTelemetry traces. The mcp SDK already opens a span for every MCP request it serves
(`OpenTelemetryMiddleware`, mcp/server/_otel.py), through the OpenTelemetry API, which records nothing until a
tracer provider is set. With an OTLP endpoint configured, one is set here that exports them over OTLP/HTTP.

The exporter is the optional dependency group `otel` (`pip install 'onlysq-mcp[otel]'`), imported only when
an endpoint is configured. Everything else is configured by the standard OTEL_* variables, read by the
OpenTelemetry SDK itself: OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME, OTEL_BSP_SCHEDULE_DELAY, ...
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
SERVICE_NAME = "onlysq-mcp"

logger = logging.getLogger(__name__)


def configure_tracing(environ: Mapping[str, str]) -> bool:
    """Export the SDK's spans when an OTLP endpoint is configured; whether they are exported."""
    if not any(environ.get(name) for name in ENDPOINT_VARIABLES):
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        logger.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry exporter is not installed, so no traces "
            "are exported: pip install 'onlysq-mcp[otel]'"
        )
        return False
    # Traces leave in batches, from a thread of their own; spans still queued are sent when the process exits.
    provider = TracerProvider(
        resource=Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", SERVICE_NAME)})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    logger.info("Exporting OpenTelemetry traces over OTLP/HTTP")
    return True
