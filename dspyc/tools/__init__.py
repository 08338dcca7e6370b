"""Tools for the tool-calling agent: typed functions, their schemas, bounded execution, data providers."""

from dspyc.tools.base import Tool, ToolError, ToolRegistry, ToolResult, run_with_timeout
from dspyc.tools.builtin import default_registry, safe_arithmetic

__all__ = ["Tool", "ToolError", "ToolRegistry", "ToolResult", "default_registry", "run_with_timeout", "safe_arithmetic"]
