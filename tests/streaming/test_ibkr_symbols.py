"""IBKR symbols, contracts, channels and configuration (no connection)."""

from __future__ import annotations

import pytest
from ib_async import Client, Wrapper

from wrdata.channels import Channel
from wrdata.datastream import DataStream
from wrdata.streaming import registry
from wrdata.streaming.base import ConfigurationError, UnknownSymbolError, UnsupportedChannelError
from wrdata.streaming.ibkr import (
    ContractSpec,
    IbkrVenue,
    canonical_symbol,
    format_symbol,
    parse_symbol,
    spec_from_fields,
    to_contract,
)


@pytest.mark.parametrize(
    "text,canonical,spec",
    [
        ("AAPL", "AAPL", ContractSpec("STK", "AAPL", "SMART", "USD")),
        ("aapl", "AAPL", ContractSpec("STK", "AAPL", "SMART", "USD")),
        ("BRK.B", "BRK B", ContractSpec("STK", "BRK B", "SMART", "USD")),
        ("STK:AAPL:SMART:USD", "AAPL", ContractSpec("STK", "AAPL", "SMART", "USD")),
        ("EUR.USD", "EUR.USD", ContractSpec("CASH", "EUR", "IDEALPRO", "USD")),
        ("EURUSD", "EUR.USD", ContractSpec("CASH", "EUR", "IDEALPRO", "USD")),
        ("eur/usd", "EUR.USD", ContractSpec("CASH", "EUR", "IDEALPRO", "USD")),
        ("CASH:EUR:IDEALPRO:USD", "EUR.USD", ContractSpec("CASH", "EUR", "IDEALPRO", "USD")),
        ("STK:SAP:IBIS:EUR", "STK:SAP:IBIS:EUR", ContractSpec("STK", "SAP", "IBIS", "EUR")),
        ("fut:es:cme:usd:202612", "FUT:ES:CME:USD:202612", ContractSpec("FUT", "ES", "CME", "USD", "202612")),
        ("FUT:ES:CME::202612", "FUT:ES:CME:USD:202612", ContractSpec("FUT", "ES", "CME", "USD", "202612")),
        ("FUT:ES:CME:USD:202612:multiplier=50", "FUT:ES:CME:USD:202612:multiplier=50",
         ContractSpec("FUT", "ES", "CME", "USD", "202612", multiplier="50")),
        ("IND:SPX:CBOE:USD", "IND:SPX:CBOE:USD", ContractSpec("IND", "SPX", "CBOE", "USD")),
        ("OPT:AAPL:SMART:USD:20261218:200:CALL", "OPT:AAPL:SMART:USD:20261218:200:C",
         ContractSpec("OPT", "AAPL", "SMART", "USD", "20261218", 200.0, "C")),
        ("FOP:ES:CME:USD:20261218:5512.5:P", "FOP:ES:CME:USD:20261218:5512.5:P",
         ContractSpec("FOP", "ES", "CME", "USD", "20261218", 5512.5, "P")),
        ("STK:IBM:SMART:USD:primaryExchange=NYSE", "STK:IBM:SMART:USD:primaryExchange=NYSE",
         ContractSpec("STK", "IBM", "SMART", "USD", primary_exchange="NYSE")),
        ("CRYPTO:BTC", "CRYPTO:BTC:PAXOS:USD", ContractSpec("CRYPTO", "BTC", "PAXOS", "USD")),
    ],
)
def test_symbol_forms(text, canonical, spec):
    assert parse_symbol(text) == spec
    assert canonical_symbol(text) == canonical
    assert parse_symbol(canonical) == spec, "the canonical spelling reads back as the same contract"
    assert format_symbol(parse_symbol(canonical)) == canonical


@pytest.mark.parametrize(
    "text,why",
    [
        ("", "empty"),
        ("FUT:ES", "need an exchange"),
        ("FUT:ES:CME:USD", "expiry"),
        ("FUT:ES:CME:USD:2026", "expiry"),
        ("OPT:AAPL:SMART:USD:20261218:200", "right C or P"),
        ("OPT:AAPL:SMART:USD:20261218:abc:C", "strike"),
        ("STK:AAPL:SMART:USD:colour=red", "unknown option 'colour'"),
        ("STK:AAPL:SMART:USD:tradingClass=NMS:NASDAQ", "must come last"),
        ("STK:AAPL:SMART:USD:X:Y", "at most 3 fields"),
        ("BTC-USD-PERP", "not a ticker"),
    ],
)
def test_bad_symbols_say_what_is_wrong(text, why):
    with pytest.raises(UnknownSymbolError, match=why) as e:
        parse_symbol(text)
    assert "FUT:ES:CME:USD:202612" in str(e.value), "the error shows the forms that work"


def _sent_by_ib_async(call) -> list[str]:
    """Fields of the message ib_async's own encoder produces for a request."""
    c = Client(Wrapper(None))  # type: ignore[arg-type]
    sent: list[str] = []
    c.isConnected = lambda: True  # type: ignore[method-assign]
    c.sendMsg = sent.append  # type: ignore[method-assign]
    call(c)
    return sent[0].split("\0")[:-1]


@pytest.mark.parametrize("symbol", ["AAPL", "EUR.USD", "FUT:ES:CME:USD:202612:multiplier=50", "OPT:AAPL:SMART:USD:20261218:200:C",
                                    "STK:IBM:SMART:USD:primaryExchange=NYSE", "STK:BRK B:SMART:USD"])
def test_the_symbol_survives_the_request_encoding(symbol):
    """Requests carry the contract as parsed plus the conId; the recorded request alone names the symbol."""
    spec = parse_symbol(symbol)
    f = _sent_by_ib_async(lambda c: c.reqTickByTickData(7, to_contract(spec, 265598), "AllLast", 0, False))
    assert f[0] == "97" and f[1] == "7" and f[2] == "265598"
    assert format_symbol(spec_from_fields(f[2:14])) == canonical_symbol(symbol)
    f = _sent_by_ib_async(lambda c: c.reqMktDepth(8, to_contract(spec, 1), 10, True, []))
    assert format_symbol(spec_from_fields(f[3:15])) == canonical_symbol(symbol)


def test_claims_and_channels():
    v = IbkrVenue()
    for s in ("AAPL", "EUR.USD", "FUT:ES:CME:USD:202612"):
        assert IbkrVenue.claims(s)
    assert not IbkrVenue.claims("BTC-USD-PERP")
    assert v.streams("AAPL", Channel("trade")) == [("AAPL", "trade")]
    assert v.streams("AAPL", Channel("bar", "5s")) == [("AAPL", "bar:5s")]
    assert v.upstream(Channel("bar", "1m")) == Channel("bar", "5s")
    assert v.upstream(Channel("bar", "1M")) == Channel("bar", "5s")
    assert v.upstream(Channel("bar", "1s")) == Channel("trade"), "shorter than 5 s: built from trades"
    assert v.upstream(Channel("bar", "7s")) == Channel("trade")
    assert v.streams("AAPL", Channel("book", depth=5)) == [("AAPL", "book")]
    assert v.streams("AAPL", Channel("book", depth=10)) == [("AAPL", "book")]
    with pytest.raises(UnsupportedChannelError, match="depth_rows"):
        v.streams("AAPL", Channel("book", depth=20))
    assert IbkrVenue(depth_rows=20).streams("AAPL", Channel("book", depth=20)) == [("AAPL", "book")]
    with pytest.raises(UnsupportedChannelError, match="no trades"):
        v.streams("EUR.USD", Channel("trade"))
    with pytest.raises(UnsupportedChannelError):
        v.check_channel(Channel("aggtrade"))
    with pytest.raises(UnsupportedChannelError, match="partial"):
        v.streams("AAPL", Channel("book", depth=5, partial=True))


def _clear_stock_env(monkeypatch):
    for name in registry.STOCK_ORDER:
        if name in registry.PROVIDERS:
            for envs in registry.venue_class(name).credential_env.values():
                for e in envs:
                    monkeypatch.delenv(e, raising=False)


def test_configuration_and_routing(monkeypatch):
    _clear_stock_env(monkeypatch)
    assert not IbkrVenue.has_credentials({})
    with pytest.raises(ConfigurationError):
        registry.resolve("AAPL", {})
    assert registry.resolve("AAPL", {"ibkr": {"port": "4002"}}) == "ibkr"
    monkeypatch.setenv("IBKR_HOST", "10.0.0.5")
    assert registry.resolve("AAPL", {}) == "ibkr"
    v = IbkrVenue()
    assert (v.host, v.port) == ("10.0.0.5", 4002)
    monkeypatch.setenv("IBKR_PORT", "7497")
    monkeypatch.setenv("IBKR_CLIENT_ID", "42")
    v = IbkrVenue()
    assert (v.host, v.port, v.client_id) == ("10.0.0.5", 7497, 42)
    # arguments beat the environment; an endpoint beats both
    v = IbkrVenue(credentials={"host": "127.0.0.9", "port": "4001", "client_id": "3"})
    assert (v.host, v.port, v.client_id) == ("127.0.0.9", 4001, 3)
    v = IbkrVenue(url="127.0.0.1:4010", credentials={"port": "4001"})
    assert (v.host, v.port, v.url) == ("127.0.0.1", 4010, "127.0.0.1:4010")
    assert IbkrVenue(url="tws://[::1]:4002").host == "::1"
    with pytest.raises(ConfigurationError, match="host:port"):
        IbkrVenue(url="localhost")
    with pytest.raises(ConfigurationError, match="client id"):
        IbkrVenue(credentials={"client_id": "seven"})


def test_defaults_are_a_local_paper_gateway(monkeypatch):
    for e in ("IBKR_HOST", "IBKR_PORT", "IBKR_CLIENT_ID"):
        monkeypatch.delenv(e, raising=False)
    v = IbkrVenue()
    assert (v.host, v.port) == ("127.0.0.1", 4002)
    assert v.client_id == IbkrVenue().client_id, "stable within a process (reconnects keep it)"


async def test_datastream_keyword_arguments_reach_the_venue(monkeypatch):
    _clear_stock_env(monkeypatch)
    ds = DataStream(ibkr_host="127.0.0.2", ibkr_port="4999", ibkr_client_id="11")
    try:
        v = ds.manager.venue("ibkr")
        assert (v.host, v.port, v.client_id) == ("127.0.0.2", 4999, 11)
        assert ds.manager.resolve("AAPL") == "ibkr"
        assert v.describe() == "ibkr at 127.0.0.2:4999"
    finally:
        await ds.close()
