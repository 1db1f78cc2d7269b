# onlysq-mcp over streamable HTTP, as one replica of a deployment (docs/deploy.md).
#   docker build -t onlysq-mcp .
#   docker run -p 8000:8000 -e ONLYSQ_MCP_HTTP_TOKEN=... -e ONLYSQ_API_KEY=... onlysq-mcp
# Keys and the token come from the environment at run time (a Kubernetes Secret); none is baked in here.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ONLYSQ_MCP_OUTPUT_DIR=/data/images

# `--build-arg EXTRAS=[otel]` adds the OpenTelemetry exporter.
ARG EXTRAS=""
COPY pyproject.toml README.md LICENSE /tmp/src/
COPY onlysq_mcp /tmp/src/onlysq_mcp
RUN pip install --no-cache-dir "/tmp/src${EXTRAS}" && rm -rf /tmp/src

# A fixed numeric id, so that `runAsNonRoot` can verify it and a shared volume can be made writable for it.
RUN useradd --system --uid 10001 --create-home --home-dir /home/onlysq onlysq \
    && mkdir -p /data/images && chown -R 10001:10001 /data
USER 10001
WORKDIR /home/onlysq

EXPOSE 8000
# The slim image has no curl: the probe is Python's own urllib. /healthz needs no token.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3).status != 200)"]

# Refuses to start on 0.0.0.0 without ONLYSQ_MCP_HTTP_TOKEN (or --allow-unauthenticated behind an
# authenticating proxy).
CMD ["onlysq-mcp", "--transport", "http", "--host", "0.0.0.0", "--port", "8000"]
