#!/usr/bin/env python3
"""Aggregates berth-bench JSON lines into the Markdown table of docs/benchmarks.md.

    report.py RESULTS.jsonl [--command "bench/run ..."]

Medians over rounds of each figure; the ratio is first target ÷ second target (for a
duration, second ÷ first, so that above 1 always means the first target is faster);
server CPU per operation beside every wall-clock figure; each figure of the first target
as a share of the machine limit that bounds it; spreads as (max-min)/median.
"""

import argparse
import json
import statistics
import sys
from collections import defaultdict

GIB = 1 << 30

# workload -> (title, CPU-per-op unit, function(record) -> CPU per op, limit key or None)
def cpu_per_gib(r):
    return r["server_cpu_s"] / (r["bytes"] / GIB)


def cpu_ms_per_op(r):
    return r["server_cpu_s"] * 1e3 / r["ops"]


def cpu_us_per_op(r):
    return r["server_cpu_s"] * 1e6 / r["ops"]


def cpu_s(r):
    return r["server_cpu_s"]


ROWS = [
    ("push_mono", "1. Monolithic push, 1 blob", "CPU-s/GiB", cpu_per_gib, "push"),
    ("push_chunked", "2. Chunked push, 16 MiB chunks", "CPU-s/GiB", cpu_per_gib, "push"),
    ("pull_full", "3a. Blob pull, full GET", "CPU-s/GiB", cpu_per_gib, "pull"),
    ("pull_ranged", "3b. Blob pull, ranged GETs", "CPU-s/GiB", cpu_per_gib, "pull"),
    ("small_blobs", "4. Small blobs, 8 clients", "CPU-ms/blob", cpu_ms_per_op, "fsync"),
    ("manifest_get", "5. Manifest GET by tag", "CPU-us/req", cpu_us_per_op, None),
    ("tags_list", "6. Tags list, pages of 100", "CPU-ms/page", cpu_ms_per_op, None),
    ("copy_in_skopeo", "7a. skopeo copy into registry", "CPU-s/copy", cpu_s, None),
    ("copy_out_skopeo", "7b. skopeo copy out of registry", "CPU-s/copy", cpu_s, None),
    ("copy_in_berth", "7c. berth copy into registry", "CPU-s/copy", cpu_s, None),
    ("copy_out_berth", "7d. berth copy out of registry", "CPU-s/copy", cpu_s, None),
    ("tls_get_h1", "9a. TLS blob GET, HTTP/1.1", "CPU-s/GiB", cpu_per_gib, "tls"),
    ("tls_get_h2", "9b. TLS blob GET, HTTP/2", "CPU-s/GiB", cpu_per_gib, "tls"),
    ("plain_get_h1", "9c. Plain blob GET, HTTP/1.1 (TLS phase's client)", "CPU-s/GiB", cpu_per_gib, "pull"),
]
LIMITS = [
    ("sha256_one_core", "SHA-256, one core"),
    ("disk_write_fdatasync", "Data disk, sequential write + fdatasync"),
    ("fdatasync_4k", "Data disk, 4 KiB write + fdatasync"),
    ("loopback_tcp", "Loopback TCP, one stream"),
    # Results before the provider was recorded measured ring only.
    ("aes_128_gcm_one_core", "AES-128-GCM seal, 16 KiB records, one core (ring)"),
    ("aes_256_gcm_one_core", "AES-256-GCM seal, 16 KiB records, one core (ring)"),
]
# Keyed WORKLOAD@PROVIDER (see limit_key); Berth's provider is marked in the table.
for _provider in ("ring", "aws-lc-rs"):
    for _bits in ("128", "256"):
        LIMITS.append((f"aes_{_bits}_gcm_one_core@{_provider}",
                       f"AES-{_bits}-GCM seal, 16 KiB records, one core ({_provider})"))
        LIMITS.append((f"rustls_records_aes_{_bits}_one_core@{_provider}",
                       f"rustls record layer, AES-{_bits}-GCM, 64 KiB writes, one core ({_provider})"))
LIMITS += [
    ("rustls_loopback", "Minimal rustls sender to receiver over loopback"),
]


def limit_key(r):
    """A limit's key: its workload, and for the cipher probes the provider measured."""
    w = r["workload"]
    if r.get("provider") and (w.startswith("aes_") or w.startswith("rustls_records")):
        return f"{w}@{r['provider']}"
    return w


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs):
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return None
    m = statistics.median(xs)
    return (max(xs) - min(xs)) / m if m else None


def fmt(x, digits=None):
    if x is None:
        return "–"
    if digits is None:
        a = abs(x)
        digits = 0 if a >= 100 else 1 if a >= 10 else 2 if a >= 1 else 3
    return f"{x:,.{digits}f}"


def pct(x):
    return "–" if x is None else f"{x * 100:.0f}%"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--command", default=None)
    a = ap.parse_args()

    recs = [json.loads(line) for line in open(a.results) if line.strip()]
    config = next((r for r in recs if r["kind"] == "config"), {})
    targets = config.get("targets") or sorted({r["target"] for r in recs if "target" in r})
    if len(targets) < 2:
        targets = targets + ["(none)"]
    A, B = targets[0], targets[1]
    by = defaultdict(list)
    for r in recs:
        if r["kind"] == "workload":
            by[(r["workload"], r["target"])].append(r)
    limits = defaultdict(list)
    berth_provider = set()
    for r in recs:
        if r["kind"] == "limit":
            limits[limit_key(r)].append(r["value"])
            if r.get("berth_provider"):
                berth_provider.add(limit_key(r))
    lim = {k: med(v) for k, v in limits.items()}
    push_limit = None
    if lim.get("sha256_one_core") and lim.get("disk_write_fdatasync"):
        push_limit = min(lim["sha256_one_core"], lim["disk_write_fdatasync"])
    limit_of = {"push": push_limit, "pull": lim.get("loopback_tcp"), "fsync": None,
                "tls": lim.get("rustls_loopback")}

    out = []
    p = out.append
    rounds = max((r.get("round", 0) for r in recs if r["kind"] == "workload"), default=0)
    p(f"Rounds: {rounds} (order of the targets alternates every round); figures are medians over rounds.")
    if a.command:
        p(f"Command: `{a.command}`")
    p("")
    p(f"| Workload | Unit | {A} | {B} | {A} ÷ {B} (speed) | {A} CPU/op | {B} CPU/op | CPU/op {A} ÷ {B} | {A} share of limit | spread wall {A} / {B} | spread CPU/op {A} / {B} |")
    p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for row in ROWS:
        if row[0] == "manifest_get":
            for c in config.get("conns", [16, 64]):
                rows.append((f"manifest_get_c{c}", f"{row[1]}, {c} conns") + row[2:])
        else:
            rows.append(row)
    for key, title, cpu_unit, cpu_fn, limit in rows:
        ra, rb = by.get((key, A), []), by.get((key, B), [])
        if not ra and not rb:
            continue
        unit = (ra or rb)[0]["unit"]
        va, vb = med(r["value"] for r in ra), med(r["value"] for r in rb)

        def cpus(rs):
            return [cpu_fn(r) if r.get("server_cpu_s") is not None else None for r in rs]

        ca, cb = med(cpus(ra)), med(cpus(rb))
        speed = ratio(vb, va) if unit == "s" else ratio(va, vb)
        share = None
        if limit and limit_of.get(limit) and va is not None:
            share = va / limit_of[limit]
        p(f"| {title} | {unit} | {fmt(va)} | {fmt(vb)} | {fmt(speed, 2)}× | {fmt(ca)} {cpu_unit} | {fmt(cb)} {cpu_unit} | {fmt(ratio(ca, cb), 2)} | {pct(share)} | {pct(spread([r['value'] for r in ra]))} / {pct(spread([r['value'] for r in rb]))} | {pct(spread(cpus(ra)))} / {pct(spread(cpus(rb)))} |")

    # The backends' CPU (bench/run --s3: SeaweedFS, PostgreSQL) in the same steps.
    backends = config.get("backends") or []
    if backends:
        p("")
        p("CPU per operation of the server and of the shared backends during the same steps "
          f"({', '.join(backends)}: the CPU of their process trees; both servers use the same ones).")
        p("")
        heads = " | ".join(f"{t} {b}" for t in (A, B) for b in ["server"] + backends + ["total"])
        p(f"| Workload | Unit | {heads} | total {A} ÷ {B} |")
        p("|---|---|" + "---:|" * (2 * (len(backends) + 2) + 1))
        for key, title, cpu_unit, cpu_fn, _limit in rows:
            ra, rb = by.get((key, A), []), by.get((key, B), [])
            if not ra and not rb:
                continue

            def part(rs, name):
                # cpu_fn reads server_cpu_s: give it the backend's (or the total) instead.
                out = []
                for r in rs:
                    b = r.get("backend_cpu_s") or {}
                    if r.get("server_cpu_s") is None:
                        continue
                    if name == "server":
                        v = r["server_cpu_s"]
                    elif name == "total":
                        v = r["server_cpu_s"] + sum(b.get(n, 0.0) for n in backends)
                    else:
                        v = b.get(name)
                    if v is not None:
                        out.append(cpu_fn(dict(r, server_cpu_s=v)))
                return med(out)

            cells = []
            totals = []
            for rs in (ra, rb):
                for name in ["server"] + backends + ["total"]:
                    v = part(rs, name)
                    cells.append(fmt(v))
                    if name == "total":
                        totals.append(v)
            p(f"| {title} | {cpu_unit} | " + " | ".join(cells)
              + f" | {fmt(ratio(totals[0], totals[1]), 2)} |")

    # Latency and paging details.
    extra = []
    for c in config.get("conns", [16, 64]):
        key = f"manifest_get_c{c}"
        ra, rb = by.get((key, A), []), by.get((key, B), [])
        if ra or rb:
            extra.append((f"Manifest GET p50 / p99 latency, {c} conns (us)",
                          f"{fmt(med(r['p50_us'] for r in ra))} / {fmt(med(r['p99_us'] for r in ra))}",
                          f"{fmt(med(r['p50_us'] for r in rb))} / {fmt(med(r['p99_us'] for r in rb))}",
                          ratio(med(r['p99_us'] for r in rb), med(r['p99_us'] for r in ra))))
    ra, rb = by.get(("tags_list", A), []), by.get(("tags_list", B), [])
    if ra or rb:
        la, lb = med(r["listings_per_s"] for r in ra), med(r["listings_per_s"] for r in rb)
        extra.append(("Full tag listings/s (following Link)", fmt(la), fmt(lb), ratio(la, lb)))
        pa = med(r["ops"] / r["walks"] for r in ra)
        pb = med(r["ops"] / r["walks"] for r in rb)
        extra.append(("Responses per full listing", fmt(pa), fmt(pb), None))
    setup = defaultdict(list)
    for r in recs:
        if r["kind"] == "setup":
            setup[(r["workload"], r["target"])].append(r)
    sa, sb = setup.get(("tag_put", A), []), setup.get(("tag_put", B), [])
    if sa or sb:
        va, vb = med(r["value"] for r in sa), med(r["value"] for r in sb)
        ca = med(r["server_cpu_s"] * 1e3 / r["ops"] for r in sa if r.get("server_cpu_s") is not None)
        cb = med(r["server_cpu_s"] * 1e3 / r["ops"] for r in sb if r.get("server_cpu_s") is not None)
        extra.append(("Setup: manifest PUT by tag, 8 clients (tags/s; CPU-ms/tag)",
                      f"{fmt(va)}; {fmt(ca)}", f"{fmt(vb)}; {fmt(cb)}", ratio(va, vb)))
    server = {r["target"]: r for r in recs if r["kind"] == "server"}
    if server:
        ma = server.get(A, {}).get("peak_rss_kib")
        mb = server.get(B, {}).get("peak_rss_kib")
        extra.append(("8. Peak resident memory, whole run (MiB)",
                      fmt(ma / 1024 if ma else None), fmt(mb / 1024 if mb else None),
                      ratio(mb, ma)))
        ta = server.get(A, {}).get("cpu_s")
        tb = server.get(B, {}).get("cpu_s")
        extra.append(("8. Server CPU seconds, whole run", fmt(ta), fmt(tb), ratio(tb, ta)))
    if extra:
        p("")
        p(f"| Figure | {A} | {B} | {A} advantage (×, above 1: {A} better) |")
        p("|---|---:|---:|---:|")
        for name, xa, xb, rr in extra:
            p(f"| {name} | {xa} | {xb} | {fmt(rr, 2) + '×' if rr is not None else '–'} |")

    mem = [r for r in recs if r["kind"] == "memory"]
    if mem:
        sizes = sorted({r["blob_mib"] for r in mem})
        p("")
        p("Memory as blob size grows: one fresh server per size; a monolithic push, a chunked "
          "push (16 MiB chunks) and a whole pull of one blob; peak RSS (`VmHWM`) in MiB.")
        p("")
        p("| Server | " + " | ".join(f"{m:,} MiB blob" for m in sizes)
          + f" | largest ÷ smallest |")
        p("|---|" + "---:|" * len(sizes) + "---:|")
        for t in [A, B] + sorted({r["target"] for r in mem} - {A, B}):
            row = {r["blob_mib"]: r["peak_rss_kib"] / 1024 for r in mem if r["target"] == t}
            if not row:
                continue
            cells = [fmt(row.get(m)) for m in sizes]
            lo, hi = row.get(sizes[0]), row.get(sizes[-1])
            growth = f"{hi / lo:.2f}" if lo and hi else "–"
            p(f"| {t} | " + " | ".join(cells) + f" | {growth} |")
        # Each operation's own peak, when the run measured them (the peak is reset before
        # each one through /proc/PID/clear_refs).
        ops = [("push", "monolithic push"), ("chunked", "chunked push"), ("pull", "pull")]
        if any(f"{o}_peak_rss_kib" in r for r in mem for o, _ in ops):
            p("")
            p("Peak RSS of each operation on its own (MiB; the peak is reset before each, so "
              "an operation's figure includes what earlier ones left resident):")
            p("")
            p("| Server | Operation | " + " | ".join(f"{m:,} MiB blob" for m in sizes)
              + " | largest ÷ smallest |")
            p("|---|---|" + "---:|" * len(sizes) + "---:|")
            for t in [A, B] + sorted({r["target"] for r in mem} - {A, B}):
                for o, label in ops:
                    row = {r["blob_mib"]: r[f"{o}_peak_rss_kib"] / 1024 for r in mem
                           if r["target"] == t and f"{o}_peak_rss_kib" in r}
                    if not row:
                        continue
                    cells = [fmt(row.get(m)) for m in sizes]
                    lo, hi = row.get(sizes[0]), row.get(sizes[-1])
                    growth = f"{hi / lo:.2f}" if lo and hi else "–"
                    p(f"| {t} | {label} | " + " | ".join(cells) + f" | {growth} |")

    fan = [r for r in recs if r["kind"] == "fanout"]
    if fan:
        r0 = fan[0]
        p("")
        p(f"Fan-out: {r0['clients']} clients at once, each on its own connection pulling one "
          f"image of {fmt(r0.get('image_bytes', 0) / (1 << 20))} MiB (manifest, config, layers; "
          "HTTP/2: the blobs as parallel streams); medians over rounds. Completion is from the "
          "common start, handshake included; peak RSS is `VmRSS` sampled every 20 ms.")
        p("")
        p("| Fan-out | Server | Aggregate MB/s | p50 s | p99 s | p99 ÷ p50 | CPU-s/GiB | Peak RSS MiB | RSS before MiB | Failed clients |")
        p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for w in sorted({r["workload"] for r in fan}):
            for t in [A, B]:
                rs = [r for r in fan if r["workload"] == w and r["target"] == t]
                if not rs:
                    continue
                p(f"| {w} | {t} | {fmt(med(r['value'] for r in rs))} | "
                  f"{fmt(med(r['p50_s'] for r in rs))} | {fmt(med(r['p99_s'] for r in rs))} | "
                  f"{fmt(med(r['p99_over_p50'] for r in rs), 2)} | "
                  f"{fmt(med(r['server_cpu_s_per_gib'] for r in rs))} | "
                  f"{fmt(med((r['peak_rss_kib'] or 0) / 1024 for r in rs))} | "
                  f"{fmt(med((r['rss_before_kib'] or 0) / 1024 for r in rs))} | "
                  f"{sum(r.get('failed', 0) for r in rs)} |")
    cm = [r for r in recs if r["kind"] == "connmem"]
    if cm:
        p("")
        p("Server memory per connection: RSS growth over opening the connections (idle: "
          "handshake and one request done; slow: a blob GET whose body the client stops "
          "reading after 64 KiB), in KiB per connection.")
        p("")
        p("| Server | Scheme | Idle conns | KiB per idle | Slow conns | KiB per slow |")
        p("|---|---|---:|---:|---:|---:|")
        for r in cm:
            p(f"| {r['target']} | {r.get('scheme', '')} | {r['idle_conns']} | "
              f"{fmt(r['idle_kib_per_conn'])} | {r['slow_conns']} | {fmt(r['slow_kib_per_conn'])} |")

    if lim:
        p("")
        p("| Machine limit (same run) | Median | Spread |")
        p("|---|---:|---:|")
        for key, title in LIMITS:
            if key in limits:
                unit = next(r["unit"] for r in recs if r["kind"] == "limit" and limit_key(r) == key)
                if key in berth_provider and "@" in key:
                    title += ", Berth's provider"
                p(f"| {title} | {fmt(lim[key])} {unit} | {pct(spread(limits[key]))} |")
        if push_limit:
            p(f"| Durable push limit: min(SHA-256, write+fdatasync) | {fmt(push_limit)} MB/s | |")
    print("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
