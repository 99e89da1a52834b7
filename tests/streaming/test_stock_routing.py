"""A plain ticker goes to the first stock provider with credentials (alpaca, polygon,
finnhub, ibkr by default; configurable); ``provider:SYMBOL`` is always explicit."""

from __future__ import annotations

import pytest

from wrdata.channels import split_target
from wrdata.datastream import DataStream
from wrdata.streaming.base import ConfigurationError
from wrdata.streaming.registry import resolve

_ENV = (
    "APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "ALPACA_API_KEY", "ALPACA_SECRET_KEY", "POLYGON_API_KEY", "MASSIVE_API_KEY",
    "FINNHUB_API_KEY", "FINNHUB_TOKEN", "FINNHUB_KEY", "IBKR_HOST", "IBKR_PORT", "IBKR_CLIENT_ID",
)
ALPACA = {"key": "ak", "secret": "as"}


@pytest.fixture(autouse=True)
def no_keys_in_env(monkeypatch):
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


def test_no_credentials_names_the_keys_to_set():
    with pytest.raises(ConfigurationError) as e:
        resolve("AAPL")
    text = str(e.value)
    for name in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "POLYGON_API_KEY", "FINNHUB_API_KEY"):
        assert name in text
    assert "alpaca:AAPL" in text


def test_first_configured_provider_in_order_wins():
    assert resolve("AAPL", {"finnhub": {"key": "f"}}) == "finnhub"
    assert resolve("AAPL", {"finnhub": {"key": "f"}, "polygon": {"key": "p"}}) == "polygon"
    assert resolve("AAPL", {"finnhub": {"key": "f"}, "polygon": {"key": "p"}, "alpaca": ALPACA}) == "alpaca"
    assert resolve("AAPL", {"alpaca": {"key": "only-the-key"}, "finnhub": {"key": "f"}}) == "finnhub", "half a key pair is not configured"
    assert resolve("brk.b", {"polygon": {"key": "p"}}) == "polygon"
    order = ("finnhub", "polygon", "alpaca", "ibkr")
    assert resolve("AAPL", {"polygon": {"key": "p"}, "alpaca": ALPACA, "finnhub": {"key": "f"}}, order) == "finnhub"


def test_environment_counts_as_configured(monkeypatch):
    monkeypatch.setenv("POLYGON_API_KEY", "p")
    assert resolve("MSFT") == "polygon"
    monkeypatch.setenv("APCA_API_KEY_ID", "k")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "s")
    assert resolve("MSFT") == "alpaca"


def test_crypto_shapes_still_go_to_crypto_venues():
    creds = {"alpaca": ALPACA, "polygon": {"key": "p"}, "finnhub": {"key": "f"}}
    assert resolve("BTCUSDT", creds) == "binance"
    assert resolve("BTC-USD", creds) == "coinbase"
    assert resolve("BTC/USD", creds) == "kraken"


def test_explicit_prefixes():
    assert split_target("alpaca:AAPL") == ("alpaca", "AAPL")
    assert split_target("polygon:X:BTCUSD") == ("polygon", "X:BTCUSD")
    assert split_target("finnhub:BINANCE:BTCUSDT") == ("finnhub", "BINANCE:BTCUSDT")
    assert split_target("alpaca:BTC/USD") == ("alpaca", "BTC/USD")


async def test_datastream_keyword_credentials_and_order():
    async with DataStream(alpaca_key="k", alpaca_secret="s", polygon_key="p") as ds:
        assert ds.manager.resolve("AAPL") == "alpaca"
    async with DataStream(polygon_key="p", finnhub_key="f", stock_order=["finnhub", "polygon"]) as ds:
        assert ds.manager.resolve("AAPL") == "finnhub"
    async with DataStream(credentials={"polygon": {"key": "p"}}) as ds:
        assert ds.manager.resolve("TSLA") == "polygon"
