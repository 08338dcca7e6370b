"""Where the weather and stock tools get their data: a real HTTP API when reachable, or a local JSON file.

`DSPYC_TOOLS_PROVIDER` picks: `http` (the API only: unreachable is an error the agent reports), `offline`
(the JSON files in `datasets/agent/`), or `auto` (the API, falling back to the files when it cannot be
reached). Every result names its source, so the user always sees which one answered.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from pathlib import Path
from typing import Any, Protocol

import httpx

from dspyc.settings import Settings, get_settings
from dspyc.tools.base import ToolError

PROVIDERS = ("auto", "http", "offline")


class ProviderUnavailable(ToolError):
    """The API could not be reached (network down, DNS, timeout, 5xx)."""


class Provider(Protocol):
    label: str

    def lookup(self, key: str) -> dict[str, Any]: ...


# WMO weather interpretation codes (Open-Meteo's `weather_code`), grouped.
_WMO = {
    0: "clear sky",
    1: "mainly clear",
    2: "partly cloudy",
    3: "overcast",
    45: "fog",
    48: "fog",
    51: "light drizzle",
    53: "drizzle",
    55: "dense drizzle",
    61: "light rain",
    63: "rain",
    65: "heavy rain",
    71: "light snow",
    73: "snow",
    75: "heavy snow",
    80: "rain showers",
    81: "rain showers",
    82: "violent rain showers",
    95: "thunderstorm",
    96: "thunderstorm with hail",
    99: "thunderstorm with hail",
}


def _get(url: str, params: dict[str, Any], timeout: float, api: str) -> httpx.Response:
    try:
        r = httpx.get(url, params=params, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ProviderUnavailable(f"{api} is unreachable ({type(exc).__name__}: {exc or 'no detail'})") from None
    if r.status_code >= 500:
        raise ProviderUnavailable(f"{api} answered HTTP {r.status_code}")
    if r.status_code >= 400:
        raise ToolError(f"{api} refused the request (HTTP {r.status_code})")
    return r


class OpenMeteoWeather:
    """Open-Meteo (free, no key): geocode the city, then its current conditions."""

    label = "open-meteo.com"

    def __init__(self, timeout: float = 4.0):
        self.timeout = timeout

    def lookup(self, key: str) -> dict[str, Any]:
        geo = _get(
            "https://geocoding-api.open-meteo.com/v1/search", {"name": key, "count": 1}, self.timeout, "Open-Meteo"
        ).json()
        if not geo.get("results"):
            raise ToolError(f"no city named {key!r} found")
        place = geo["results"][0]
        cur = _get(
            "https://api.open-meteo.com/v1/forecast",
            {
                "latitude": place["latitude"],
                "longitude": place["longitude"],
                "current": "temperature_2m,weather_code,wind_speed_10m",
            },
            self.timeout,
            "Open-Meteo",
        ).json()["current"]
        return {
            "city": place["name"],
            "country": place.get("country", ""),
            "temperature_c": cur["temperature_2m"],
            "conditions": _WMO.get(cur["weather_code"], f"code {cur['weather_code']}"),
            "wind_kmh": cur["wind_speed_10m"],
            "time": cur.get("time", ""),
        }


class StooqStocks:
    """Stooq's quote CSV (free, no key): latest close for a US ticker."""

    label = "stooq.com"

    def __init__(self, timeout: float = 4.0):
        self.timeout = timeout

    def lookup(self, key: str) -> dict[str, Any]:
        text = _get(
            "https://stooq.com/q/l/",
            {"s": f"{key.lower()}.us", "f": "sd2t2ohlcv", "h": "", "e": "csv"},
            self.timeout,
            "Stooq",
        ).text
        rows = list(csv.DictReader(io.StringIO(text)))
        if not rows or rows[0].get("Close") in (None, "", "N/D"):
            raise ToolError(f"no quote for symbol {key!r}")
        row = rows[0]
        return {"symbol": key.upper(), "price": float(row["Close"]), "currency": "USD", "date": row.get("Date", "")}


class OfflineTable:
    """A JSON object file `{key: {...}}`, matched case-insensitively."""

    def __init__(self, path: Path, what: str):
        self.path, self.what = path, what
        self.label = f"offline: {path.name}"

    def lookup(self, key: str) -> dict[str, Any]:
        try:
            table = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ToolError(f"offline {self.what} file {self.path} is unreadable: {exc}") from None
        table = {k: v for k, v in table.items() if not k.startswith("_")}
        by_key = {k.lower(): (k, v) for k, v in table.items()}
        hit = by_key.get(key.strip().lower())
        if hit is None:
            raise ToolError(f"no offline {self.what} data for {key!r}; known: {', '.join(sorted(table))}")
        return dict(hit[1])


class Fallback:
    """`auto`: the API first; when it is unreachable, the offline file (and remember, for this process)."""

    def __init__(self, primary: Provider, fallback: Provider):
        self.primary, self.fallback = primary, fallback
        self.down: str | None = None
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        return self.fallback.label if self.down else self.primary.label

    def lookup(self, key: str) -> dict[str, Any]:
        if not self.down:
            try:
                return self.primary.lookup(key) | {"source": self.primary.label}
            except ProviderUnavailable as exc:
                with self._lock:
                    self.down = str(exc)
        return self.fallback.lookup(key) | {"source": f"{self.fallback.label} ({self.down}; fell back)"}


class Labelled:
    def __init__(self, provider: Provider):
        self.provider = provider
        self.label = provider.label

    def lookup(self, key: str) -> dict[str, Any]:
        return self.provider.lookup(key) | {"source": self.provider.label}


def data_dir(s: Settings) -> Path:
    return s.tools_data_dir or s.project_dir / "datasets" / "agent"


def build(kind: str, s: Settings | None = None) -> Labelled | Fallback:
    """The weather or stock provider the settings choose."""
    s = s or get_settings()
    mode = s.tools_provider
    if mode not in PROVIDERS:
        from dspyc.errors import DspycError

        raise DspycError(f"unknown tools_provider {mode!r}: choose one of {', '.join(PROVIDERS)}")
    if kind == "weather":
        http, offline = OpenMeteoWeather(s.tools_http_timeout_s), OfflineTable(data_dir(s) / "weather.json", "weather")
    else:
        http, offline = StooqStocks(s.tools_http_timeout_s), OfflineTable(data_dir(s) / "stocks.json", "stock")
    if mode == "http":
        return Labelled(http)
    if mode == "offline":
        return Labelled(offline)
    return Fallback(http, offline)
