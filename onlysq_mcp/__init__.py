"""onlysq-mcp: an MCP server for the OnlySq AI API and Yandex AI Studio."""

__version__ = "0.1.0"
