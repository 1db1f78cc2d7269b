#!/usr/bin/env bash
# Add onlysq-mcp to Claude Code: `./claude_code.sh` (stdio, the default) or `./claude_code.sh http`.
# Run it with the venv that has onlysq-mcp active (or its bin/ first on PATH).
set -euo pipefail

case "${1:-stdio}" in
  stdio)
    # `onlysq-mcp config claude-code` prints the `claude mcp add --scope user ...` line for this
    # installation: the venv's python by absolute path, and the ONLYSQ_*/YANDEX_* settings set here.
    # Secret values go straight to Claude Code (which keeps them in ~/.claude.json), never to the screen.
    # Assigned first so that `set -e` stops here if the settings are invalid.
    command="$(onlysq-mcp config claude-code --show-secrets)"
    eval "$command"
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
