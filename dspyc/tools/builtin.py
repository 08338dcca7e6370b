"""The seed's tools: weather, stock prices, and a calculator that parses arithmetic with `ast` (no eval)."""

from __future__ import annotations

import ast
import operator
from typing import Any

from dspyc.settings import Settings, get_settings
from dspyc.tools import providers
from dspyc.tools.base import Tool, ToolError, ToolRegistry

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_EXPONENT = 100  # 9**9**9 would hang the process; arithmetic a user asks for never needs more
MAX_LENGTH = 200


def safe_arithmetic(expression: str) -> float | int:
    """Evaluate + - * / // % ** and parentheses over numbers by walking the parsed AST; anything else is refused."""
    if len(expression) > MAX_LENGTH:
        raise ToolError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.replace("^", "**").replace("×", "*").replace("÷", "/"), mode="eval")
    except SyntaxError:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from None

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](walk(node.operand))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
                raise ToolError(f"exponent {right} is too large (max {MAX_EXPONENT})")
            try:
                return _BINARY[type(node.op)](left, right)
            except ZeroDivisionError:
                raise ToolError("division by zero") from None
        raise ToolError(f"unsupported element in expression: {ast.dump(node)[:60]}")

    return walk(tree)


def default_registry(s: Settings | None = None) -> ToolRegistry:
    """get_weather, get_stock_price and calculate, bound to the providers the settings choose."""
    s = s or get_settings()
    weather, stocks = providers.build("weather", s), providers.build("stock", s)

    def get_weather(city: str) -> dict[str, Any]:
        """Get the current weather (temperature, conditions, wind) for a city.

        Args:
            city: The city name, e.g. Paris.
        """
        return weather.lookup(city)

    def get_stock_price(symbol: str) -> dict[str, Any]:
        """Get the latest stock price for a ticker symbol.

        Args:
            symbol: The stock ticker symbol, e.g. AAPL.
        """
        return stocks.lookup(symbol.strip().upper())

    def calculate(expression: str) -> float | int:
        """Evaluate an arithmetic expression with + - * / % ** and parentheses.

        Args:
            expression: The arithmetic expression, e.g. (3 + 4) * 2.
        """
        return safe_arithmetic(expression)

    return ToolRegistry([Tool(get_weather), Tool(get_stock_price), Tool(calculate)], timeout_s=s.tools_timeout_s)
