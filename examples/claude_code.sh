#!/usr/bin/env bash
# Add onlysq-mcp to Claude Code: `./claude_code.sh` (stdio, the default) or `./claude_code.sh http`.
set -euo pipefail

case "${1:-stdio}" in
  stdio)
    # Claude Code launches the server itself; uvx fetches onlysq-mcp from PyPI on first use.
    claude mcp add onlysq -e ONLYSQ_API_KEY=openai -- uvx onlysq-mcp
    ;;
  http)
    # A server you run yourself, with the same token in its environment:
    #   ONLYSQ_MCP_HTTP_TOKEN=<long random string> onlysq-mcp --transport http --port 8000
    claude mcp add --transport http onlysq http://127.0.0.1:8000/mcp --header "Authorization: Bearer $ONLYSQ_MCP_HTTP_TOKEN"
    ;;
  *)
    echo "usage: $0 [stdio|http]" >&2
    exit 2
    ;;
esac
