"""Store: startup reads at 100 vs 100,000 conversations; a durable append vs bare fsyncs.

(1) Startup reads: open the writer and a reader, count, read the first page of 50 and a page
    deep in the list (after 50,000; after 50 in the small store), close. The same work on a
    store of 100 and of 100,000 conversations, interleaved run by run. Target: 100k/100 <= 1.2.
    The recovery query alone is compared the same way (both stores have 10 pending). The
    stores hold metadata only (events are never read here) and are built once with
    executemany in one transaction, then cached under $TMPDIR/acpd-bench-store/.
(2) Durable append: `append_user_message` (committed and fsynced before it returns) against two
    bare baselines writing a record of the same size to a file in the same directory:
    - append+fsync: `write` to an O_APPEND file, `fsync`. What the acceptance names. The file
      grows, so each fsync also commits the new size (on ext4 a journal commit);
    - overwrite+fdatasync: `pwrite` over a preallocated, already-synced file, `fdatasync`.
      What SQLite's WAL does once it is reused (written in place, fdatasync): the cheapest
      durable write on the disk, so the stricter, fairer floor.
    All three alternate call by call, in a rotating order (no side always follows another),
    after a warm-up that lasts until the WAL has filled once and is reused in place (as in a
    running daemon; while it first grows, each commit's fsync also commits its size).
    p50, p99 and max of single calls. Target: durable p50 and p99 within 1.5x of append+fsync
    (the acceptance); the ratio to the floor is reported against the same 1.5. The same
    durable append with the store's file-identity check switched off runs in the rotation too,
    and the check alone is timed: what detecting a deleted or replaced file costs. Set TMPDIR to
    measure another disk; on tmpfs all sides are free and the ratios mean nothing.

Target rows say pass or FAIL in their note.

Run: `python -m tests.bench.run --only store`, or `python -m tests.bench.bench_store`.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from store import SCHEMA_VERSION, Store, new_conversation_id
from store.records import encode_page_cursor

BIG, SMALL, PAGE = 100_000, 100, 50
PENDING = 10  # conversations the recovery query must find in the big store


def _cache_dir() -> Path:
    path = Path(tempfile.gettempdir()) / "acpd-bench-store"
    path.mkdir(exist_ok=True)
    return path


def _build(path: Path, n: int) -> None:
    """A store of `n` conversations with spread-out activity, written in one transaction."""
    tmp = path.with_suffix(".building")
    for stale in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        stale.unlink(missing_ok=True)
    Store.open(tmp).close()  # the real schema, via the real migrations
    start = 1_700_000_000.0
    rows, queued = [], []
    for i in range(n):
        created = start + i * 30.0
        updated = created + (i * 7919 % 86_400)  # activity order differs from creation order
        argv = msgspec.json.encode(["claude-code-acp", "--model", "sonnet"]).decode()
        conv_id, last, cursor = new_conversation_id(), 40 + i % 200, 30 + i % 150
        rows.append(
            (conv_id, f"conversation {i}: fix the flaky test", "claude", argv,
             f"/home/dev/src/project-{i % 37}", f"sess-{i}", "/home/dev", "idle",
             created, updated, last, cursor, "ask")
        )  # fmt: skip
        if i % (n // PENDING) == 0:  # one queued message: its event and its queue row
            queued.append((conv_id, max(last, cursor) + 1, updated))
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO conversations (id, title, agent, agent_cmd, cwd, acp_session_id, "
            "acp_session_cwd, status, created_at, updated_at, last_seq, cursor, "
            "permission_policy) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
        conn.executemany(
            "INSERT INTO events VALUES (?, ?, 'user_message', ?, '{\"text\":\"next\"}')", queued
        )
        conn.executemany(  # at the end of the line: the position is the seq
            "INSERT INTO queue (conversation_id, seq, position) VALUES (?1, ?2, ?2)",
            [q[:2] for q in queued],
        )
        conn.execute("COMMIT")
    finally:
        conn.close()  # the last connection: checkpoints and removes the WAL
    os.replace(tmp, path)  # a half-built store is never mistaken for a cached one


def _store_of(n: int) -> Path:
    path = _cache_dir() / f"v{SCHEMA_VERSION}-{n}.sqlite3"
    try:
        with Store.open(path) as s:
            if s.count_conversations() == n:
                return path
    except Exception:
        pass  # damaged or from an older layout: build it again
    path.unlink(missing_ok=True)
    _build(path, n)
    return path


def _deep_cursor(path: Path, offset: int) -> str:
    with Store.open_reader(path) as r:
        row = r._conn.execute(
            "SELECT updated_at, id FROM conversations ORDER BY updated_at DESC, id DESC "
            "LIMIT 1 OFFSET ?",
            (offset - 1,),
        ).fetchone()
    return encode_page_cursor(row[0], row[1])


def _startup(path: Path, deep: str) -> Callable[[], None]:
    def run() -> None:
        with Store.open(path), Store.open_reader(path) as reader:
            reader.count_conversations()
            page, nxt = reader.list_conversations(PAGE)
            deeper, _ = reader.list_conversations(PAGE, before=deep)
            assert len(page) == PAGE == len(deeper)
            assert nxt is not None

    return run


def _stats(samples_ns: list[int], unit_ns: float) -> dict[str, Any]:
    xs = sorted(s / unit_ns for s in samples_ns)
    return {
        "median": statistics.median(xs),
        "min": xs[0],
        "max": xs[-1],
        "runs": len(xs),
        "p99": xs[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))],
    }


def _row(name: str, unit: str, stats: dict[str, Any], note: str = "") -> dict[str, Any]:
    keys = ("median", "min", "max", "runs")
    return {"name": name, "unit": unit, **{k: stats.get(k) for k in keys}, "note": note}


def _verdict(value: float, target: float) -> str:
    return f"target <= {target}: {'pass' if value <= target else 'FAIL'}"


def _ratio(name: str, slow: float, fast: float, runs: int, note: str) -> dict[str, Any]:
    return _row(name, "x", {"median": slow / fast, "runs": runs}, note)


def _timed(fn: Callable[[], object], runs: int) -> list[int]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return samples


def _interleaved(ops: Mapping[Any, Callable[[], object]], runs: int) -> dict[Any, list[int]]:
    """`runs` timed calls of each op, alternating, so all see the same machine."""
    samples: dict[Any, list[int]] = {k: [] for k in ops}
    for _ in range(runs):
        for k, op in ops.items():
            samples[k] += _timed(op, 1)
    return samples


def bench_startup(quick: bool) -> list[dict[str, Any]]:
    runs = 20 if quick else 200
    paths = {n: _store_of(n) for n in (SMALL, BIG)}
    deep = {n: _deep_cursor(p, min(n // 2, 50_000)) for n, p in paths.items()}
    ops = {n: _startup(p, deep[n]) for n, p in paths.items()}
    for _ in range(3):  # warm the page cache and the code paths
        for op in ops.values():
            op()
    stats = {n: _stats(s, 1e3) for n, s in _interleaved(ops, runs).items()}
    what = "open writer+reader, count, page 1, deep page, close"
    rows = [_row(f"startup reads @{n:,}", "us", stats[n], what) for n in paths]
    ratio = stats[BIG]["median"] / stats[SMALL]["median"]
    rows.append(_ratio(f"startup reads {BIG:,}/{SMALL}", ratio, 1.0, runs, _verdict(ratio, 1.2)))
    readers = {n: Store.open_reader(p) for n, p in paths.items()}
    try:
        big = readers[BIG]
        parts: dict[str, tuple[Callable[[], object], str]] = {
            "count_conversations": (big.count_conversations, "a counter row"),
            "list_conversations after 50,000": (
                lambda: big.list_conversations(PAGE, before=deep[BIG]),
                f"{PAGE} rows, keyset",
            ),
        }
        for name, (fn, note) in parts.items():
            st = _stats(_timed(fn, runs * 5), 1e3)
            rows.append(_row(f"{name} @{BIG:,}", "us", st, note))
        recover = {n: r.conversations_needing_recovery for n, r in readers.items()}
        assert all(len(fn()) == PENDING for fn in recover.values())
        rec = {n: _stats(s, 1e3) for n, s in _interleaved(recover, runs * 5).items()}
        for n in paths:
            note = f"{PENDING} pending, the running index and the queue; p99 {rec[n]['p99']:.0f} us"
            rows.append(_row(f"conversations_needing_recovery @{n:,}", "us", rec[n], note))
        ratio = rec[BIG]["median"] / rec[SMALL]["median"]
        name = f"recovery query {BIG:,}/{SMALL}"
        rows.append(_ratio(name, ratio, 1.0, runs * 5, _verdict(ratio, 1.2)))
    finally:
        for r in readers.values():
            r.close()
    return rows


def _fs_type(path: Path) -> str:
    """The filesystem under `path`, from /proc/self/mounts (Linux); '?' elsewhere."""
    best, fstype = "", "?"
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                _, mount, kind, *_ = line.split()
                if str(path).startswith(mount) and len(mount) > len(best):
                    best, fstype = mount, kind
    except OSError:
        pass
    return fstype


PREALLOCATED = 4 * 1024 * 1024  # the overwrite baseline's file: written and synced up front


def bench_durable_append(quick: bool) -> list[dict[str, Any]]:
    warmup, runs = (800, 300) if quick else (800, 2000)
    work = Path(tempfile.mkdtemp(prefix="append-", dir=_cache_dir()))
    record = b'{"text":"' + b"please also run the linters and fix what they report " * 3 + b'"}'
    line = record + b"\n"
    fds: list[int] = []
    try:
        with Store.open(work / "acpd.sqlite3") as store:
            conv = store.create_conversation(title="b", agent="demo", agent_cmd=["x"], cwd="/")
            appended = os.open(work / "appended.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fds.append(appended)
            overwritten = os.open(work / "overwritten.log", os.O_WRONLY | os.O_CREAT, 0o600)
            fds.append(overwritten)
            os.write(overwritten, b"\0" * PREALLOCATED)  # real blocks, not fallocate's
            os.fsync(overwritten)  # unwritten extents: converting them is a metadata write
            offset = 0

            def append_fsync() -> None:
                os.write(appended, line)
                os.fsync(appended)

            def overwrite_fdatasync() -> None:
                nonlocal offset
                os.pwrite(overwritten, line, offset)
                os.fdatasync(overwritten)
                offset = (offset + len(line)) % (PREALLOCATED - len(line))

            def durable() -> None:
                store.append_user_message(conv.id, record)

            def durable_unchecked() -> None:
                # The same append without the file-identity check (two stat(2) before the
                # COMMIT and two after): what the check costs, measured beside it.
                files, store._files = store._files, None
                try:
                    store.append_user_message(conv.id, record)
                finally:
                    store._files = files

            def plain() -> None:
                store.append_event(conv.id, "agent_message", record)

            wal = work / "acpd.sqlite3-wal"
            wal_before = wal.stat().st_size
            for _ in range(100):  # the WAL only grows until its first checkpoint (~570)
                durable()
            wal_per_append = (wal.stat().st_size - wal_before) / 100
            # Warm up until the WAL has filled, been checkpointed and restarted: from then on
            # commits overwrite it in place, as in a daemon up for more than a few turns
            # (while it grows, each fsync also commits its new size). A bound on the rounds
            # keeps a disk where it never settles from looping.
            steady, rounds = 0, 0
            while rounds < warmup or (steady < 200 and rounds < 20 * warmup):
                size = wal.stat().st_size
                durable()
                append_fsync()
                overwrite_fdatasync()
                steady = steady + 1 if wal.stat().st_size == size else 0
                rounds += 1
            fns = {
                "durable": durable,
                "unchecked": durable_unchecked,
                "append": append_fsync,
                "overwrite": overwrite_fdatasync,
                "plain": plain,
            }
            names = list(fns)
            samples: dict[str, list[int]] = {name: [] for name in names}
            for i in range(runs):
                for name in names[i % 5 :] + names[: i % 5]:  # rotate the order
                    fn = fns[name]
                    t0 = time.perf_counter_ns()
                    fn()
                    samples[name].append(time.perf_counter_ns() - t0)
            samples["check"] = _timed(store.check_file, runs * 10)
    finally:
        for fd in fds:
            os.close(fd)
        shutil.rmtree(work, ignore_errors=True)
    fs = _fs_type(work)
    st = {name: _stats(xs, 1e3) for name, xs in samples.items()}
    tmpfs = " (tmpfs: meaningless)" if fs == "tmpfs" else ""

    def p99(name: str) -> str:
        return f"p50 {st[name]['median']:.0f}, p99 {st[name]['p99']:.0f} us"

    def ratio(q: str, base: str, label: str) -> dict[str, Any]:
        key = "median" if q == "p50" else q
        value = st["durable"][key] / st[base][key]
        name = f"durable append / {label}, {q}"
        return _ratio(name, value, 1.0, runs, _verdict(value, 1.5) + tmpfs)

    body_size = f"{len(line)} B"
    return [
        _row("append_user_message (durable)", "us", st["durable"],
             f"{p99('durable')}; {body_size} body, {wal_per_append / 1024:.0f} KiB of WAL; {fs}"),
        _row("baseline: write O_APPEND + fsync", "us", st["append"],
             f"{p99('append')}; {body_size}; grows the file; same dir"),
        _row("baseline: pwrite in place + fdatasync", "us", st["overwrite"],
             f"{p99('overwrite')}; {body_size}; preallocated, as a reused WAL"),
        ratio("p50", "append", "append+fsync"),
        ratio("p99", "append", "append+fsync"),
        ratio("p50", "overwrite", "overwrite+fdatasync (floor)"),
        ratio("p99", "overwrite", "overwrite+fdatasync (floor)"),
        _row("append_event (not durable)", "us", st["plain"],
             f"{p99('plain')}; survives a crash, not power loss"),
        _row("append_user_message, no file check", "us", st["unchecked"],
             f"{p99('unchecked')}; checked costs p50 "
             f"{st['durable']['median'] - st['unchecked']['median']:+.0f} us, p99 "
             f"{st['durable']['p99'] - st['unchecked']['p99']:+.0f} us (noise included)"),
        _row("file-identity check", "us", st["check"],
             f"{p99('check')}; two stat(2); two per durable append, one per other write"),
    ]  # fmt: skip


def run(quick: bool) -> list[dict[str, Any]]:
    return bench_startup(quick) + bench_durable_append(quick)


def _table(rows: list[dict[str, Any]]) -> str:
    cols = ("name", "unit", "median", "min", "max", "runs", "note")

    def cell(v: object) -> str:
        return "-" if v is None else f"{v:,.2f}" if isinstance(v, float) else str(v)

    cells = [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    lines = [list(cols), ["-" * w for w in widths], *cells]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(x, widths, strict=True)) for x in lines)


if __name__ == "__main__":
    import sys

    print(_table(run(quick="--quick" in sys.argv)))
