"""``verify`` finds damaged, foreign and inconsistent files, moves the unreadable and
foreign ones to the quarantine folder, and says what is wrong."""

from __future__ import annotations

import json
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner
from query_helpers import int_ts

from wrdata.cli import main
from wrdata.message import StreamMessage
from wrdata.queries import connect, verify
from wrdata.storage import StorageFS, from_messages, list_sealed, read_table, write_sealed
from wrdata.storage.layout import day_of, partition_dir, sealed_name


def test_truncated_and_foreign_files_are_quarantined(recording, tmp_path):
    root = recording.copy(tmp_path / "d")
    files = list_sealed(str(root), "trades")
    victim = files[1]
    data = open(victim.path, "rb").read()
    with open(victim.path, "wb") as f:
        f.write(data[: len(data) // 2])  # a disk that filled up, a copy cut short
    # a Parquet file of something else, named like a wrdata file, in a partition folder
    foreign = os.path.join(os.path.dirname(victim.path), "other-1-2.parquet")
    pq.write_table(pa.table({"a": [1, 2, 3]}), foreign)
    # and one with wrdata metadata, but of another table
    qfile = list_sealed(str(root), "quotes")[0].path
    wrong = os.path.join(os.path.dirname(victim.path), os.path.basename(qfile))
    shutil.copy(qfile, wrong)
    foreign_bytes = open(foreign, "rb").read()

    r = CliRunner().invoke(main, ["verify", "--root", str(root)])
    assert r.exit_code == 1, r.output
    assert f"PROBLEM unreadable: {victim.path}" in r.output
    assert f"PROBLEM foreign-schema: {foreign}" in r.output and "no wrdata schema metadata" in r.output
    assert f"PROBLEM foreign-schema: {wrong}" in r.output and "holds table 'quotes', not 'trades'" in r.output
    assert "3 files quarantined" in r.output
    q = os.path.join(str(root), "_quarantine", os.path.relpath(victim.path, root))
    assert open(q, "rb").read() == data[: len(data) // 2]  # moved, not changed
    assert json.load(open(q + ".reason"))["kind"] == "unreadable"
    assert open(os.path.join(str(root), "_quarantine", os.path.relpath(foreign, root)), "rb").read() == foreign_bytes
    for p in (victim.path, foreign, wrong):
        assert not os.path.exists(p)
    # readers work again, on what is left; a second verify is clean
    con = connect(root)
    n = con.sql("SELECT count(*) FROM trades").fetchall()[0][0]
    assert n == read_table(str(root), "trades").num_rows > 0
    r = CliRunner().invoke(main, ["verify", "--root", str(root)])
    assert r.exit_code == 0, r.output
    assert "0 problems" in r.output


def test_no_quarantine_only_reports(recording, tmp_path):
    root = recording.copy(tmp_path / "d")
    victim = list_sealed(str(root), "quotes")[0].path
    with open(victim, "r+b") as f:
        f.truncate(100)
    rep = verify(str(root), quarantine=False)
    assert [(f.kind, f.path) for f in rep.problems] == [("unreadable", victim)]
    assert os.path.exists(victim) and rep.quarantined == []


def _write(root, rows, *, check_order=True, writer="w1", provider="sim"):
    fs = StorageFS(root, fsync=False)
    batch = from_messages("trades", rows, writer)
    day = day_of(rows[0].ts_recv)
    ph = f"{partition_dir(fs.root, 'trades', provider, day)}/{writer}-x{rows[0].seq}.parquet"
    return write_sealed(fs, [batch], "trades", provider, day, writer, placeholder=ph, check_order=check_order)[0]


def _trades(t0, seqs, conn=1):
    return [StreamMessage(provider="sim", symbol="X", kind="trade", ts_recv=t0 + s * 10, ts_event=None, conn=conn, seq=s, idx=0,
                          channel="trade", price=1.0 + s, size=1.0) for s in seqs]


def test_order_duplicates_and_names(tmp_path):
    root = tmp_path / "d"
    t0 = 1_790_000_000_000_000_000
    a = _write(root, _trades(t0, range(0, 100)))
    b = _write(root, _trades(t0, range(50, 150)))  # rows 50..99 are in both: counted twice
    c = _write(root, [*_trades(t0, [300, 302]), *_trades(t0, [301])], check_order=False)  # out of order
    rep = verify(str(root))
    kinds = {(f.kind, f.path) for f in rep.problems}
    assert ("duplicate", b) in kinds
    assert any("50 rows are also in" in f.message for f in rep.problems)
    assert ("order", c) in kinds
    assert rep.quarantined == []  # readable wrdata files stay where they are
    # a file renamed by hand: its name no longer says what is in it
    d = os.path.join(os.path.dirname(a), sealed_name("w1", t0 + 5000, t0 + 6000))
    os.rename(c, d)
    rep = verify(str(root))
    assert any(f.kind == "name" and f.path == d and "time-range pruning would skip rows" in f.message for f in rep.problems)
    assert os.path.exists(a)


def test_rows_in_the_wrong_date_folder(tmp_path):
    root = tmp_path / "d"
    t0 = 1_790_000_000_000_000_000
    good = _write(root, _trades(t0, range(5)))
    wrong_dir = os.path.dirname(good).replace(f"date={list_sealed(str(root))[0].date}", "date=2000-01-01")
    os.makedirs(wrong_dir)
    os.rename(good, os.path.join(wrong_dir, os.path.basename(good)))
    rep = verify(str(root))
    assert [f.kind for f in rep.problems] == ["misplaced"]
    assert "in the folder of 2000-01-01" in rep.problems[0].message


def test_verify_reads_every_row(recording, tmp_path):
    root = recording.copy(tmp_path / "d")
    rep = verify(str(root))
    total = sum(read_table(str(root), t, journal=False).num_rows for t in ("trades", "quotes", "events", "raw"))
    assert rep.ok and rep.rows == total and rep.files == len(list_sealed(str(root)))
    assert int_ts(read_table(str(root), "trades"), "ts_recv").num_rows > 0
