"""The shape of the package: no import cycles, no long functions, tools from one list."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from mcp import Client

from onlysq_mcp.tools import TOOLS

PACKAGE = Path(__file__).resolve().parent.parent / "onlysq_mcp"
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text(encoding="utf-8")) for path in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The package's modules `name` imports, at run time or for type checking alike, at any depth."""
    package = name if (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists() else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                # `from . import tools` names a module; `from .tools import TOOLS` names something in one.
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return (found & known) - {name}


def import_graph() -> dict[str, set[str]]:
    trees = modules()
    known = set(trees)
    return {name: imported(name, tree, known) for name, tree in trees.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert graph["onlysq_mcp.server"] >= {"onlysq_mcp.tools", "onlysq_mcp.services"}  # the graph is real
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_relative_imports_resolve_to_modules():
    known = {"onlysq_mcp.tools", "onlysq_mcp.services", "onlysq_mcp.errors", "onlysq_mcp.providers.base"}
    top = ast.parse(
        "from . import tools\nfrom .services import Services\nif TYPE_CHECKING:\n    import onlysq_mcp.errors\n"
    )
    assert imported("onlysq_mcp.server", top, known) == {"onlysq_mcp.tools", "onlysq_mcp.services", "onlysq_mcp.errors"}
    nested = ast.parse("from ..errors import UpstreamError\nfrom .base import Provider\n")
    assert imported("onlysq_mcp.providers.onlysq", nested, known) == {"onlysq_mcp.errors", "onlysq_mcp.providers.base"}


@pytest.mark.parametrize("tool", TOOLS, ids=lambda tool: tool.name)
def test_every_tool_is_a_module_level_function(tool):
    assert tool.fn.__qualname__ == tool.name, "a tool defined inside another function"
    assert tool.description and tool.title


def long_functions(limit: int) -> list[str]:
    """Functions of the package longer than `limit` lines, from the `def` line to the last line."""
    found = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit:
                    found.append(f"{name}.{node.name}: {length} lines")
    return found


def test_no_function_is_longer_than_sixty_lines():
    assert long_functions(MAX_FUNCTION_LINES) == []
    assert long_functions(40), "the measure finds nothing at all"


@pytest.mark.anyio
async def test_the_server_serves_the_tools_list_in_its_order(server):
    async with Client(server) as client:
        listed = await client.list_tools()
    assert [tool.name for tool in listed.tools] == [tool.name for tool in TOOLS]
    for tool in TOOLS:
        assert f"- `{tool.name}`: {tool.guide}\n" in server.instructions
