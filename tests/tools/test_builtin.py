import json

import httpx
import pytest

from dspyc.settings import Settings
from dspyc.tools import default_registry, safe_arithmetic
from dspyc.tools.base import ToolError
from dspyc.tools.providers import Fallback, OfflineTable, OpenMeteoWeather, ProviderUnavailable


@pytest.mark.parametrize(
    "expr,value",
    [
        ("2 + 3 * 4", 14),
        ("(3 + 4) * 2", 14),
        ("2^10", 1024),
        ("-7 // 2", -4),
        ("10 % 4", 2),
        ("1.5 * 4", 6.0),
        ("7 / 2", 3.5),
    ],
)
def test_calculator_arithmetic(expr, value):
    assert safe_arithmetic(expr) == value


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('true')",
        "open('/etc/passwd')",
        "x + 1",
        "[1, 2]",
        "9 ** 9 ** 9",
        "1 / 0",
        "2 +",
        "'a' * 3",
        "(lambda: 1)()",
    ],
)
def test_calculator_refuses_anything_but_arithmetic(expr):
    with pytest.raises(ToolError):
        safe_arithmetic(expr)


def _offline(tmp_path, **kw):
    (tmp_path / "weather.json").write_text(
        json.dumps({"_note": "x", "Paris": {"city": "Paris", "temperature_c": 14.2}})
    )
    (tmp_path / "stocks.json").write_text(json.dumps({"AAPL": {"symbol": "AAPL", "price": 227.48}}))
    return Settings(tools_data_dir=tmp_path, **({"tools_provider": "offline"} | kw))


def test_offline_tools_label_their_source(tmp_path):
    reg = default_registry(_offline(tmp_path))
    r = reg.call("get_weather", {"city": "paris"})
    assert r.ok and r.output["temperature_c"] == 14.2 and r.output["source"] == "offline: weather.json"
    assert "source" not in r.as_text()  # the model sees the data, the user sees the label
    s = reg.call("get_stock_price", {"symbol": " aapl "})
    assert s.ok and s.output["price"] == 227.48
    missing = reg.call("get_weather", {"city": "Atlantis"})
    assert not missing.ok and "Atlantis" in missing.error and "Paris" in missing.error
    assert reg.call("calculate", {"expression": "6*7"}).output == 42


def test_shipped_offline_files_cover_the_seed_queries():
    reg = default_registry(Settings(tools_provider="offline"))
    assert reg.call("get_weather", {"city": "Paris"}).ok and reg.call("get_stock_price", {"symbol": "AAPL"}).ok


def _unreachable(*a, **kw):
    raise httpx.ConnectError("Name or service not known")


def test_unreachable_api_is_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(httpx, "get", _unreachable)
    reg = default_registry(_offline(tmp_path, tools_provider="http"))
    r = reg.call("get_weather", {"city": "Paris"})
    assert not r.ok and r.error.startswith("Open-Meteo is unreachable (ConnectError")
    s = reg.call("get_stock_price", {"symbol": "AAPL"})
    assert not s.ok and "Stooq is unreachable" in s.error


def test_auto_falls_back_to_offline_and_says_so(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(httpx, "get", lambda *a, **kw: calls.append(a) or _unreachable())
    reg = default_registry(_offline(tmp_path, tools_provider="auto"))
    r = reg.call("get_weather", {"city": "Paris"})
    assert r.ok and r.output["source"].startswith("offline: weather.json (Open-Meteo is unreachable")
    reg.call("get_weather", {"city": "Paris"})
    assert len(calls) == 1  # the API is not retried for every call once known down


def test_open_meteo_parses_a_real_shaped_reply(monkeypatch):
    def fake_get(url, params, timeout):
        if "geocoding" in url:
            body = {"results": [{"name": "Paris", "country": "France", "latitude": 48.85, "longitude": 2.35}]}
        else:
            body = {"current": {"temperature_2m": 12.3, "weather_code": 3, "wind_speed_10m": 9.0, "time": "t"}}
        return httpx.Response(200, json=body)

    monkeypatch.setattr(httpx, "get", fake_get)
    out = OpenMeteoWeather().lookup("Paris")
    assert out == {
        "city": "Paris",
        "country": "France",
        "temperature_c": 12.3,
        "conditions": "overcast",
        "wind_kmh": 9.0,
        "time": "t",
    }


def test_server_errors_count_as_unreachable(monkeypatch):
    monkeypatch.setattr(httpx, "get", lambda *a, **kw: httpx.Response(503))
    with pytest.raises(ProviderUnavailable):
        OpenMeteoWeather().lookup("Paris")


def test_fallback_prefers_the_api_when_it_answers(tmp_path):
    class Up:
        label = "api"

        def lookup(self, key):
            return {"v": 1}

    fb = Fallback(Up(), OfflineTable(tmp_path / "none.json", "weather"))
    assert fb.lookup("x") == {"v": 1, "source": "api"} and fb.label == "api"
