import time
from typing import Annotated, Literal

import pytest
from pydantic import Field

from dspyc.errors import DspycError
from dspyc.tools.base import Tool, ToolError, ToolRegistry, run_with_timeout


def get_weather(city: str) -> dict:
    """Get the current weather for a city.

    Args:
        city: The city name, e.g. Paris.
    """
    return {"city": city, "temperature_c": 10}


def convert(
    amount: float, unit: Literal["c", "f"] = "c", note: Annotated[str, Field(description="free text")] = ""
) -> float:
    """Convert a temperature."""
    return amount


def test_schema_from_signature_has_the_seed_shape():
    schema = Tool(get_weather).json_schema()
    assert schema["name"] == "get_weather"
    assert schema["description"] == "Get the current weather for a city."
    params = schema["parameters"]
    assert params["type"] == "object"
    assert params["properties"]["city"] == {"type": "string", "description": "The city name, e.g. Paris."}
    assert params["required"] == ["city"]
    assert params["additionalProperties"] is False


def test_schema_types_defaults_enums_and_annotated_descriptions():
    params = Tool(convert).json_schema()["parameters"]
    assert params["required"] == ["amount"]
    assert params["properties"]["amount"]["type"] == "number"
    assert params["properties"]["unit"]["enum"] == ["c", "f"]
    assert params["properties"]["unit"]["default"] == "c"
    assert params["properties"]["note"]["description"] == "free text"
    assert Tool(convert).openai_tool()["type"] == "function"


def test_validation_coerces_and_reports_every_problem():
    tool = Tool(convert)
    assert tool.validate({"amount": "3.5"}) == {"amount": 3.5, "unit": "c", "note": ""}
    with pytest.raises(ToolError) as e:
        tool.validate({"amount": "warm", "unit": "k", "extra": 1})
    msg = str(e.value)
    assert "amount" in msg and "unit" in msg and "extra" in msg
    with pytest.raises(ToolError, match="amount: Field required"):
        tool.validate({})
    with pytest.raises(ToolError, match="JSON object"):
        tool.validate(["Paris"])


def test_var_args_have_no_schema():
    def bad(*args):
        return args

    with pytest.raises(TypeError):
        Tool(bad)


def test_registry_call_success_and_every_failure_is_a_result_not_an_exception():
    def boom(x: int) -> int:
        """Always fails."""
        raise RuntimeError("kaput")

    def slow(x: int) -> int:
        """Sleeps."""
        time.sleep(5)
        return x

    reg = ToolRegistry([get_weather, boom, Tool(slow, timeout_s=0.2)])
    ok = reg.call("get_weather", {"city": "Paris"})
    assert ok.ok and ok.output["city"] == "Paris" and "Paris" in ok.as_text()
    unknown = reg.call("launch_rocket", {})
    assert not unknown.ok and "unknown tool" in unknown.error and "get_weather" in unknown.error
    invalid = reg.call("get_weather", {"town": "Paris"})
    assert not invalid.ok and "city" in invalid.error and "town" in invalid.error
    failed = reg.call("boom", {"x": 1})
    assert not failed.ok and "RuntimeError: kaput" in failed.error and "ERROR" in failed.as_text()
    t0 = time.perf_counter()
    timed_out = reg.call("slow", {"x": 1})
    assert not timed_out.ok and "timed out after 0.2s" in timed_out.error
    assert time.perf_counter() - t0 < 4  # the caller was not held for the tool's 5 s


def test_registry_rejects_duplicates_and_lists_schemas():
    reg = ToolRegistry([get_weather])
    with pytest.raises(DspycError):
        reg.register(get_weather)
    assert [s["name"] for s in reg.schemas()] == ["get_weather"] and "get_weather" in reg and len(reg) == 1


def test_run_with_timeout_passes_values_and_errors_through():
    assert run_with_timeout(lambda: 42, 1) == 42
    with pytest.raises(ValueError):
        run_with_timeout(lambda: int("x"), 1)
    with pytest.raises(TimeoutError):
        run_with_timeout(lambda: time.sleep(2), 0.05)
