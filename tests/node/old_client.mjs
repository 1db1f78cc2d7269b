// An older MCP client: the official TypeScript SDK 1.12 (protocol 2025-03-26), pinned as `mcp-sdk-1-12`.
//
// Usage: node old_client.mjs '<spec>' where spec is JSON:
//   {"transport": "stdio", "command": ["onlysq-mcp", ...], "calls": [{"name": "...", "arguments": {...}}]}
//   {"transport": "http", "url": "http://127.0.0.1:port/mcp", "calls": [...]}
// Over stdio the server gets this process's environment. Lists the tools first, as a host does (the SDK then
// checks each result's structuredContent against the tool's outputSchema), makes the calls in order and
// prints one JSON line: {"tools": [names], "results": [{"ok": true, "result": {...}} | {"ok": false, "error": "..."}]}.
import { Client } from "mcp-sdk-1-12/client/index.js";
import { StdioClientTransport } from "mcp-sdk-1-12/client/stdio.js";
import { StreamableHTTPClientTransport } from "mcp-sdk-1-12/client/streamableHttp.js";

const spec = JSON.parse(process.argv[2]);
const transport =
  spec.transport === "stdio"
    ? new StdioClientTransport({
        command: spec.command[0],
        args: spec.command.slice(1),
        env: process.env,
        stderr: "inherit",
      })
    : new StreamableHTTPClientTransport(new URL(spec.url));
const client = new Client({ name: "old-sdk-1.12", version: "1.12.1" });
await client.connect(transport);
const tools = (await client.listTools()).tools.map((tool) => tool.name);
const results = [];
for (const call of spec.calls) {
  try {
    // Long enough for a slow generation; the server's own wait is what the tests shorten.
    const result = await client.callTool(call, undefined, { timeout: 60_000 });
    results.push({ ok: true, result });
  } catch (error) {
    results.push({ ok: false, error: String(error?.message ?? error) });
  }
}
await client.close();
process.stdout.write(JSON.stringify({ tools, results }) + "\n");
