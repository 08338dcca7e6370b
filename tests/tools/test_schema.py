from dspyc.tools.schema import MAX_ITEMS, calls_response_format, render_function, to_json_schema

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city.",
    "parameters": {
        "type": "dict",
        "properties": {"city": {"type": "string", "description": "A city."}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}
STOCK = {
    "name": "get_stock_price",
    "description": "A quote.",
    "parameters": {
        "type": "object",
        "properties": {"symbol": {"type": "string", "enum": ["AAPL", "MSFT"]}},
        "required": ["symbol"],
    },
}


def test_one_anyof_branch_per_tool_constrains_name_and_arguments_together():
    rf = calls_response_format([WEATHER, STOCK], max_calls=3)
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    calls = rf["json_schema"]["schema"]["properties"]["calls"]
    assert calls["minItems"] == 1 and calls["maxItems"] == 3
    branches = calls["items"]["anyOf"]
    assert [b["properties"]["name"]["enum"] for b in branches] == [["get_weather"], ["get_stock_price"]]
    weather_args = branches[0]["properties"]["arguments"]
    assert weather_args["required"] == ["city"] and weather_args["additionalProperties"] is False
    assert branches[1]["properties"]["arguments"]["properties"]["symbol"]["enum"] == ["AAPL", "MSFT"]


def test_single_function_needs_no_anyof():
    item = calls_response_format([WEATHER])["json_schema"]["schema"]["properties"]["calls"]["items"]
    assert item["properties"]["name"]["enum"] == ["get_weather"]


def test_bfcl_types_map_to_bounded_json_schema():
    s = to_json_schema(
        {
            "type": "dict",
            "properties": {
                "x": {"type": "float"},
                "t": {"type": "tuple", "items": {"type": "integer"}},
                "a": {"type": "any"},
                "d": {"type": "dict"},
                "s": {"type": "string"},
            },
            "required": ["x", "missing"],
        }
    )
    p = s["properties"]
    assert s["type"] == "object" and s["required"] == ["x"]
    assert p["x"]["type"] == "number" and p["x"]["maximum"] > 0
    assert p["t"] == {
        "type": "array",
        "items": {"type": "integer", "minimum": p["t"]["items"]["minimum"], "maximum": p["t"]["items"]["maximum"]},
        "maxItems": MAX_ITEMS,
    }
    assert p["a"] == {} and p["d"] == {"type": "object"} and p["s"]["maxLength"] > 0


def test_render_function_marks_optional_arguments():
    line = render_function(WEATHER)
    assert line.startswith("get_weather(city: string, days?: integer) - Weather for a city.")
    assert "city: A city." in line
