"""What a capture daemon records: from the command line or a TOML file.

Command line::

    wrdata capture binance:BTCUSDT,ETHUSDT coinbase:BTC-USD --kinds trade,quote,bar:1m

TOML (``wrdata capture --config capture.toml``)::

    root = "./data"
    kinds = ["trade", "quote"]            # default for every provider
    heal = true                           # fill trade gaps from the venues' history APIs

    [providers.binance]
    symbols = ["BTCUSDT", "ETHUSDT"]
    kinds = ["trade", "book:20"]          # overrides the default
    endpoint = "ws://127.0.0.1:9001"      # optional; REST derives from it
    options = { lifetime = 82800 }        # venue timings and limits

    [providers.alpaca]
    symbols = ["AAPL", "MSFT"]
    credentials_env = { key = "MY_ALPACA_KEY", secret = "MY_ALPACA_SECRET" }

    [storage]
    flush_interval = 1.0
    roll_interval = 3600
    roll_bytes = 268435456
    fsync = "batch"
    raw_level = 9                         # zstd level of sealed raw frames: 1 costs ~1/7 the CPU, ~17% more bytes
    # s3_endpoint = "http://127.0.0.1:9000"   # for root = "s3://bucket/prefix" on an S3-compatible store

Credentials never appear in the file: a provider reads its customary environment
variables, or the ones ``credentials_env`` names.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

from ..channels import Channel, parse_channels, split_target
from ..streaming import registry


class ConfigError(ValueError):
    """A bad configuration or argument; the CLI prints it on one line and exits 2."""


@dataclass
class Target:
    provider: str
    symbols: list[str]
    kinds: list[Channel]

    def subscriptions(self) -> list[tuple[str, str, Channel]]:
        return [(self.provider, s, k) for s in self.symbols for k in self.kinds]


@dataclass
class StorageSettings:
    flush_interval: float = 1.0
    roll_interval: float = 3600.0
    roll_bytes: int = 256 * 1024 * 1024
    fsync: str = "batch"
    memory_budget: int = 512 * 1024 * 1024
    # zstd level of sealed raw files: 9 keeps Binance trade frames at ~7.8 B (DESIGN.md's
    # 8 B target) for ~1.4 us of CPU a frame; 1 gives ~9.1 B for ~0.2 us (bench/capture.py)
    raw_level: int = 9
    s3_endpoint: str = ""  # S3-compatible endpoint of an s3:// root ("": $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, else AWS)


@dataclass
class CaptureConfig:
    targets: list[Target]
    root: str
    endpoints: dict[str, str] = field(default_factory=dict)
    rest_endpoints: dict[str, str] = field(default_factory=dict)
    credentials: dict[str, dict[str, str]] = field(default_factory=dict)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    storage: StorageSettings = field(default_factory=StorageSettings)
    #: fill gaps of trade streams from the venues' history APIs (a provider's ``options``
    #: ``heal = false`` turns it off for that provider alone)
    heal: bool = True

    @property
    def providers(self) -> list[str]:
        return sorted({t.provider for t in self.targets})

    def subscriptions(self) -> list[tuple[str, str, Channel]]:
        return [s for t in self.targets for s in t.subscriptions()]


def default_root() -> str:
    return os.environ.get("WRDATA_ROOT") or "./data"


def _kinds(spec: str | list[str], where: str) -> list[Channel]:
    try:
        kinds = parse_channels(spec)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    if not kinds:
        raise ConfigError(f"{where}: no kinds given")
    return kinds


def _check_symbol(provider: str, symbol: str) -> str:
    s = symbol.strip()
    if not s or any(c.isspace() for c in s) or "," in s:
        raise ConfigError(f"malformed symbol {symbol!r} for {provider}")
    return s


def parse_targets(args: list[str], kinds: str | list[str], credentials: dict[str, dict[str, str]] | None = None) -> list[Target]:
    """``["binance:BTCUSDT,ETHUSDT", "BTC-USD"]`` → targets; bare symbols are routed by shape."""
    default = _kinds(kinds, "--kinds")
    by_provider: dict[str, list[str]] = {}
    for arg in args:
        try:
            provider, rest = split_target(arg)
        except ValueError as e:  # "binance:" with no symbol
            raise ConfigError(str(e)) from None
        if provider is None and ":" in arg:
            head = arg.split(":", 1)[0]
            if head and head.isalpha() and head.lower() == head:
                raise ConfigError(f"unknown provider {head!r} in {arg!r}: expected one of {', '.join(sorted(registry.PROVIDERS))}")
        for sym in rest.split(","):
            if not sym.strip():
                continue
            p = provider
            if p is None:
                try:
                    p = registry.resolve(sym.strip(), credentials)
                except ValueError as e:
                    raise ConfigError(str(e)) from None
            by_provider.setdefault(p, [])
            s = _check_symbol(p, sym)
            if s not in by_provider[p]:
                by_provider[p].append(s)
    if not by_provider:
        raise ConfigError("nothing to capture: give targets like binance:BTCUSDT,ETHUSDT or --config FILE")
    return [Target(p, syms, list(default)) for p, syms in by_provider.items()]


def parse_endpoints(items: list[str], what: str = "--endpoint") -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, url = item.partition("=")
        name = name.strip().lower()
        if not sep or not url:
            raise ConfigError(f"{what} expects provider=URL, got {item!r}")
        if name not in registry.PROVIDERS:
            raise ConfigError(f"{what}: unknown provider {name!r}: expected one of {', '.join(sorted(registry.PROVIDERS))}")
        out[name] = url.strip()
    return out


def load_config(path: str) -> CaptureConfig:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"bad TOML in {path}: {e}") from None
    known = {"root", "kinds", "providers", "storage", "heal"}
    extra = set(doc) - known
    if extra:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(extra))} (expected {', '.join(sorted(known))})")
    default_kinds = doc.get("kinds", ["trade"])
    providers = doc.get("providers")
    if not isinstance(providers, dict) or not providers:
        raise ConfigError(f"{path}: no [providers.<name>] sections")
    targets, endpoints, rest, creds, options = [], {}, {}, {}, {}
    for name, section in providers.items():
        if name not in registry.PROVIDERS:
            raise ConfigError(f"{path}: unknown provider {name!r}: expected one of {', '.join(sorted(registry.PROVIDERS))}")
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: [providers.{name}] must be a table")
        allowed = {"symbols", "kinds", "endpoint", "rest_endpoint", "options", "credentials_env"}
        bad = set(section) - allowed
        if bad:
            raise ConfigError(f"{path}: [providers.{name}] unknown key(s) {', '.join(sorted(bad))}")
        symbols = section.get("symbols")
        if not isinstance(symbols, list) or not symbols:
            raise ConfigError(f"{path}: [providers.{name}] needs a non-empty symbols list")
        if not all(isinstance(s, str) for s in symbols):
            raise ConfigError(f"{path}: [providers.{name}] symbols must be strings, e.g. [\"BTCUSDT\"]")
        syms = [_check_symbol(name, s) for s in symbols]
        targets.append(Target(name, syms, _kinds(section.get("kinds", default_kinds), f"{path}: [providers.{name}] kinds")))
        if "endpoint" in section:
            endpoints[name] = str(section["endpoint"])
        if "rest_endpoint" in section:
            rest[name] = str(section["rest_endpoint"])
        if "options" in section:
            if not isinstance(section["options"], dict):
                raise ConfigError(f"{path}: [providers.{name}] options must be a table")
            options[name] = dict(section["options"])
        env_names = section.get("credentials_env", {})
        if not isinstance(env_names, dict):
            raise ConfigError(f"{path}: [providers.{name}] credentials_env must map credential names to environment variables")
        found = {}
        for cred, var in env_names.items():
            value = os.environ.get(str(var))
            if not value:
                raise ConfigError(f"{path}: [providers.{name}] credential {cred!r}: environment variable {var} is not set")
            found[cred] = value
        if found:
            creds[name] = found
    storage = StorageSettings()
    for k, v in (doc.get("storage") or {}).items():
        if not hasattr(storage, k):
            raise ConfigError(f"{path}: [storage] unknown key {k!r}")
        want = type(getattr(storage, k))
        if isinstance(v, bool) or not isinstance(v, (int, float) if want in (int, float) else want):
            raise ConfigError(f"{path}: [storage] {k} must be {'a number' if want in (int, float) else 'a string'}, not {v!r}")
        setattr(storage, k, want(v))
    if not 1 <= storage.raw_level <= 22:
        raise ConfigError(f"{path}: [storage] raw_level must be a zstd level from 1 to 22, not {storage.raw_level}")
    if not isinstance(doc.get("root", ""), str):
        raise ConfigError(f"{path}: root must be a string (a path or a URI), not {doc['root']!r}")
    if not isinstance(doc.get("heal", True), bool):
        raise ConfigError(f"{path}: heal must be true or false, not {doc['heal']!r}")
    return CaptureConfig(
        targets=targets,
        root=str(doc.get("root") or default_root()),
        endpoints=endpoints,
        rest_endpoints=rest,
        credentials=creds,
        options=options,
        storage=storage,
        heal=doc.get("heal", True),
    )
