"""``wrdata heal``: heal the gaps a recording already holds, offline from the daemons.

For every gap of a trade stream that is still open (no outcome, or ``partly healed`` /
``unhealable``, and not covered by another writer: :func:`wrdata.queries.helpers.
gap_outcomes`), the window is worked out from the merged view of the recorded trades
(the last trade before the gap and the first after it, by id where the venue's ids say
so), and the venue's history API is asked for it through the same sans-IO pagers and the
same request loop live healing uses (:mod:`wrdata.streaming.heal`: rate limits, retries,
outcomes). What comes back is written by a writer of its own (``heal-...``) into the same
dataset, like a capture daemon's: the jobs' specs and every answer in ``raw`` (``wrdata
rebuild`` re-derives the rows), the trades with ``source = "backfill"``, one outcome
event per gap in ``events``. Readers' merged view then holds each trade once.

Healed rows are stamped with the receive time of the gap event they answer (where a live
heal would have delivered them: the day and place of the gap), their fetch time is in
``ts_fetched``; ``raw`` rows carry the real time. Jobs run in the order of their gaps.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..clock import recv_ns
from ..dedupe import trade_key
from ..message import StreamMessage, status_message
from ..streaming import registry
from ..streaming.base import HttpResponse, Venue, redact_url
from ..streaming.heal import DIRECTION, HEAL_CHANNELS, HealSpec, RateLimiter, drive, outcome_reason
from ..streaming.runner import next_conn_id

log = logging.getLogger("wrdata.capture.heal")

_encode = msgspec.json.Encoder().encode


@dataclass
class GapFix:
    """One recorded gap and what healing did for it."""

    provider: str
    symbol: str
    channel: str
    date: str
    writer: str
    gap_start: int | None
    gap_end: int | None
    first_missing_id: int | None
    last_missing_id: int | None
    before: str  # its outcome before this run (open, partly, unhealable)
    outcome: str = ""  # healed, partly, unhealable
    reason: str = ""
    backfilled: int = 0  # trades the merged view did not have

    def describe(self) -> str:
        where = (f"ids {self.first_missing_id}..{self.last_missing_id}" if self.first_missing_id is not None
                 else f"{_fmt(self.gap_start)} .. {_fmt(self.gap_end)}")
        return f"{self.provider} {self.symbol} {self.date} {where} (writer {self.writer}): {self.before} -> {self.reason}"


@dataclass
class HealResult:
    writer: str
    gaps: list[GapFix] = field(default_factory=list)

    @property
    def healed(self) -> int:
        return sum(1 for g in self.gaps if g.outcome == "healed")

    @property
    def backfilled(self) -> int:
        return sum(g.backfilled for g in self.gaps)


def _fmt(ns: int | None) -> str:
    from ..queries.inspect import fmt_ns

    return fmt_ns(ns) if ns is not None else "?"


def heal_dataset(root: str, **kwargs: Any) -> HealResult:
    """:func:`aheal_dataset` from synchronous code."""
    return asyncio.run(aheal_dataset(root, **kwargs))


async def aheal_dataset(
    root: str,
    providers: list[str] | None = None,
    since: Any = None,
    *,
    endpoints: dict[str, str] | None = None,
    rest_endpoints: dict[str, str] | None = None,
    credentials: dict[str, dict[str, str]] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    writer_id: str | None = None,
    filesystem: Any = None,
    journal_dir: str | None = None,
    dry_run: bool = False,
) -> HealResult:
    """Heal the open trade gaps of ``root`` (gaps recorded at or after ``since``, on
    ``providers``); returns what was done per gap. ``dry_run`` lists them only."""
    from ..queries import connect
    from ..queries.helpers import gap_outcomes, to_ns
    from ..storage import DatasetWriter
    from ..storage.layout import default_writer_id

    for p in providers or []:
        registry.venue_class(p)  # an unknown name fails before anything runs
    con = connect(root, tables=("trades", "events"), filesystem=filesystem, journal=journal_dir or True)
    rows = gap_outcomes(con, providers=providers, start=to_ns(since, "since")).to_pylist()
    todo = [r for r in rows if r["outcome"] not in ("healed", "covered") and r["channel"] in HEAL_CHANNELS]
    writer = writer_id or f"heal-{default_writer_id()}"
    res = HealResult(writer)
    if not todo:
        con.close()
        return res
    venues: dict[str, Venue] = {}
    limiters: dict[str, RateLimiter] = {}
    out = None if dry_run else DatasetWriter(root, writer_id=writer, filesystem=filesystem, journal_dir=journal_dir).start()
    done: dict[tuple, tuple[str, str, int]] = {}  # spec -> outcome: two gaps of one hole heal once
    clients: dict[str, Any] = {}  # venues whose history is not HTTP (IBKR): their client, connected
    try:
        for r in sorted(todo, key=lambda r: r["ts_recv"]):
            fix = GapFix(r["provider"], r["symbol"], r["channel"], r["date"].isoformat(), r["writer"], r["gap_start"],
                         r["gap_end"], r["first_missing_id"], r["last_missing_id"], r["outcome"])
            res.gaps.append(fix)
            p = fix.provider
            venue = venues.get(p)
            if venue is None:
                venue = venues[p] = _venue(p, endpoints, rest_endpoints, credentials, options)
                limiters[p] = RateLimiter(venue.history_rate, venue.history_burst)
                if not dry_run:
                    await _instruments(venue)
                    client = venue.client(out.on_messages, out.on_raw)
                    if hasattr(client, "history_fetch"):  # its requests ride its own connection
                        clients[p] = client
                        if not await client.hold_link():
                            log.warning("%s: cannot connect to %s for its history", p, venue.describe())
            spec, streamed = _spec(con, venue, r)
            if dry_run:
                fix.reason = "would heal" if venue.history_pager(spec) is not None else "no history API"
                continue
            key = (p, spec.symbol, spec.channel, spec.start_ns, spec.end_ns, spec.after_id, spec.before_id)
            conn = next_conn_id()  # unique in the process, as the clients' connections are
            if key in done:
                fix.outcome, fix.reason, fix.backfilled = done[key]
                fix.backfilled = 0  # counted with the first gap of the hole
                _outcome_event(out, p, conn, 0, r, fix.outcome, fix.reason, 0)
                continue
            fix.outcome, fix.reason, fix.backfilled = await _run(out, venue, limiters[p], conn, spec, streamed, r, clients.get(p))
            done[key] = (fix.outcome, fix.reason, fix.backfilled)
    finally:
        con.close()
        for client in clients.values():
            client.release_link()
            await client.close()
        if out is not None:
            await asyncio.to_thread(out.close)
    return res


def _venue(p: str, endpoints, rest_endpoints, credentials, options) -> Venue:
    cls = registry.venue_class(p)
    return cls(url=(endpoints or {}).get(p), rest_url=(rest_endpoints or {}).get(p), credentials=(credentials or {}).get(p),
               **(options or {}).get(p, {}))


async def _instruments(venue: Venue) -> None:
    """The instrument list, where a pager uses it (Kraken's REST pair names); best effort."""
    from ..streaming.http import fetch

    req = venue.instruments_request()
    if req is None:
        return
    try:
        resp = await fetch(req, timeout=venue.rest_timeout)
        if resp.status == 200:
            venue.instruments = venue.load_instruments(resp)
    except (OSError, ValueError, msgspec.DecodeError) as e:
        log.info("%s: no instrument list (%s); healing goes on without it", venue.name, e)


def _spec(con, venue: Venue, g: dict) -> tuple[HealSpec, Counter]:
    """The window of a recorded gap, from the merged view of the trades around it, and the
    keys of the trades the merged view already has in it."""
    from ..queries.helpers import Filter, source, ts_literal

    p, sym, ch = g["provider"], g["symbol"], g["channel"]
    src = source(con, "trades", Filter([p], [f"{p}:{sym}"], None, None))
    base = f"FROM {src} WHERE provider = '{p}' AND symbol = $sym AND channel = $ch"
    args = {"sym": sym, "ch": ch}
    fid, lid = g["first_missing_id"], g["last_missing_id"]
    by_id = venue.history_ids is not None
    before = after = None
    if fid is not None and by_id:
        before = con.execute(f"SELECT epoch_ns(ts_event), trade_id {base} AND trade_id < {int(fid)} ORDER BY trade_id DESC LIMIT 1",
                             args).fetchone()
        after = con.execute(f"SELECT epoch_ns(ts_event), trade_id {base} AND trade_id > {int(lid)} ORDER BY trade_id LIMIT 1",
                            args).fetchone() if lid is not None else None
    else:
        g0 = g["gap_start"] if g["gap_start"] is not None else g["ts_recv"]
        g1 = g["gap_end"] if g["gap_end"] is not None else g["ts_recv"]
        before = con.execute(f"SELECT epoch_ns(ts_event), trade_id {base} AND ts_recv <= {ts_literal(g0)} AND source = 'stream' "
                             f"ORDER BY ts_recv DESC, writer DESC, conn DESC, seq DESC, idx DESC LIMIT 1", args).fetchone()
        after = con.execute(f"SELECT epoch_ns(ts_event), trade_id {base} AND ts_recv >= {ts_literal(g1)} AND source = 'stream' "
                            f"ORDER BY ts_recv, writer, conn, seq, idx LIMIT 1", args).fetchone()
    spec = HealSpec(
        symbol=sym, channel=ch,
        start_ns=before[0] if before else g["gap_start"],
        end_ns=after[0] if after else (g["gap_end"] or g["ts_recv"]),
        after_id=(fid - 1 if fid is not None else before[1] if before else None) if by_id else None,
        before_id=(lid + 1 if lid is not None else after[1] if after else None) if by_id else None,
        stamp_ns=g["ts_recv"],
        reason=f"wrdata heal of a gap recorded by {g['writer']}",
    )
    streamed: Counter = Counter()
    res = max(1, venue.trade_time_resolution)
    if spec.start_ns is not None and spec.end_ns is not None:
        lo, hi = spec.start_ns - spec.start_ns % res, spec.end_ns - spec.end_ns % res + res - 1
        have = con.execute(
            f"SELECT epoch_ns(ts_event), price, size, trade_id, trade_ref, exchange {base} "
            f"AND epoch_ns(ts_event) BETWEEN {lo} AND {hi}", args).fetchall()
        edges = []
        for ts, price, size, tid, ref, x in have:
            m = StreamMessage(provider=p, kind="trade", ts_recv=0, ts_event=ts, price=price, size=size, trade_id=tid,
                              trade_ref=ref, exchange=x)
            streamed[trade_key(m)] += 1
            if venue.history_ids is None and tid is None and ref is None and (ts < lo + res or ts > hi - res):
                edges.append((ts, price, size))
        spec.edges = sorted(edges)
    return spec, streamed


async def _run(out, venue: Venue, limiter: RateLimiter, conn: int, spec: HealSpec, streamed: Counter, g: dict,
               client: Any = None) -> tuple[str, str, int]:
    from ..streaming.http import fetch

    p = venue.name
    pager = venue.history_pager(spec)
    if pager is None:
        reason = f"unhealable: {p} has no history API wrdata can heal from"
        _outcome_event(out, p, conn, 0, g, "unhealable", reason, 0)
        return "unhealable", reason, 0
    pager.conn = conn
    seq = [0]

    def next_seq() -> int:
        s = seq[0]
        seq[0] += 1
        return s

    out.on_raw(p, conn, next_seq(), recv_ns(), DIRECTION, f"heal:{spec.symbol}", _encode(spec))
    new = [0]

    async def fetch_one(req):
        try:
            if client is not None:
                resp = await client.history_fetch(req)
            else:
                resp = await fetch(req, timeout=venue.rest_timeout)
        except OSError as e:
            resp = HttpResponse(0, redact_url(f"{type(e).__name__}: {e}").encode())
        ts = recv_ns()
        s = next_seq()
        out.on_raw(p, conn, s, ts, "rest", redact_url(req.full_url), resp.body, resp.status)
        return resp, ts, s

    def deliver(rows: list[StreamMessage]) -> None:
        if not rows:
            return
        out.on_messages(rows)
        for m in rows:
            k = trade_key(m)
            if streamed.get(k):
                streamed[k] -= 1
            else:
                new[0] += 1

    await drive(venue, pager, limiter, fetch_one, deliver, spec.symbol)
    ts = recv_ns()
    first = seq[0]
    deliver(pager.finish(ts, first))
    status, reason = outcome_reason(pager, new[0])
    _outcome_event(out, p, conn, next_seq(), g, status, reason, new[0], ts)
    return status, reason, new[0]


def _outcome_event(out, provider: str, conn: int, seq: int, g: dict, status: str, reason: str, n: int, ts: int | None = None) -> None:
    if out is None:
        return
    m = status_message(
        provider, "healed" if status == "healed" else "error", recv_ns() if ts is None else ts, reason[:300],
        symbol=g["symbol"], conn=conn, seq=seq, channel=g["channel"], gap_start_ns=g["gap_start"], gap_end_ns=g["gap_end"],
        first_missing_id=g["first_missing_id"], last_missing_id=g["last_missing_id"], dropped=n,
    )
    out.on_raw(provider, conn, seq, m.ts_recv, "event", "", _encode(m))
    out.on_messages([m])


__all__ = ["GapFix", "HealResult", "aheal_dataset", "heal_dataset"]


# -- the command ---------------------------------------------------------------------------

def _options(specs: list[str]) -> dict[str, dict[str, Any]]:
    """``binance.history_rate=50`` -> {"binance": {"history_rate": 50.0}} (numbers and booleans parsed)."""
    import click

    out: dict[str, dict[str, Any]] = {}
    for s in specs:
        key, sep, value = s.partition("=")
        provider, dot, name = key.partition(".")
        if not sep or not dot or not provider or not name:
            raise click.BadParameter(f"expected provider.option=value, got {s!r}", param_hint="--option")
        v: Any = value
        if value.lower() in ("true", "false"):
            v = value.lower() == "true"
        else:
            try:
                v = int(value)
            except ValueError:
                try:
                    v = float(value)
                except ValueError:
                    pass
        out.setdefault(provider, {})[name] = v
    return out


def _command():
    import click

    from ..cliopts import open_root, s3_endpoint_option
    from .config import default_root, parse_endpoints

    @click.command("heal")
    @click.option("--root", default=None, help="Dataset root (default $WRDATA_ROOT, else ./data).")
    @click.option("--provider", "providers", multiple=True, help="Only this provider (repeatable; default: every recorded one).")
    @click.option("--since", help="Only gaps recorded at or after this time (ISO 8601 or ns).")
    @click.option("--endpoint", "endpoints", multiple=True, metavar="PROVIDER=URL",
                  help="A provider's base URL (its REST base derives from it, as for capture).")
    @click.option("--rest-endpoint", "rest_endpoints", multiple=True, metavar="PROVIDER=URL", help="A provider's REST base.")
    @click.option("--option", "options", multiple=True, metavar="PROVIDER.NAME=VALUE",
                  help="A venue option, e.g. binance.history_rate=50 (REST weight per second) or kraken.heal_attempts=3.")
    @click.option("--writer-id", help="Writer id of the healed rows (default heal-<host>-<pid>...).")
    @click.option("--journal-dir", help="Local directory for the journal (default <root>/_journal).")
    @click.option("--dry-run", is_flag=True, help="List the gaps that would be healed; fetch and write nothing.")
    @s3_endpoint_option
    def heal(root, providers, since, endpoints, rest_endpoints, options, writer_id, journal_dir, dry_run, s3_endpoint) -> None:
        """Heal the trade gaps a recording holds from the venues' history APIs, offline.

        \b
        wrdata heal --root ./data
        wrdata heal --root ./data --provider binance --since 2026-11-23
        wrdata heal --root ./data --endpoint binance=ws://127.0.0.1:9001 --option binance.history_rate=100

        Gaps already healed, or covered by another writer's rows, are left alone. Healed
        trades go into the dataset under a writer of their own, with every answer in raw.
        """
        from ..queries.helpers import to_ns

        root = root or default_root()
        fs = open_root(root, s3_endpoint)
        try:
            to_ns(since, "--since")
            for p in providers:
                registry.venue_class(p)
            res = heal_dataset(
                root, providers=list(providers) or None, since=since, endpoints=parse_endpoints(list(endpoints)),
                rest_endpoints=parse_endpoints(list(rest_endpoints), "--rest-endpoint"), options=_options(list(options)),
                writer_id=writer_id, filesystem=fs, journal_dir=journal_dir, dry_run=dry_run,
            )
        except (ValueError, FileNotFoundError) as e:
            raise click.UsageError(str(e)) from None
        for g in res.gaps:
            click.echo(g.describe())
        if not res.gaps:
            click.echo("no open trade gaps")
        elif not dry_run:
            click.echo(f"{len(res.gaps)} gaps: {res.healed} healed, {res.backfilled} trades backfilled "
                       f"(writer {res.writer})")

    return heal


heal_command = _command()
