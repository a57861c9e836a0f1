#!/usr/bin/env python3
"""The Markdown tables of docs/performance.md from one `tiersweep bench` report.

    python3 docs/tools/bench_tables.py target/bench/bench.json > /tmp/tables.md

Prints each table under the heading of the section it belongs to, with the report's
commit, machine and command first; the prose around the tables is written by hand from
them. A section whose run was skipped (its flag at 0) prints nothing. Numbers are rounded
as the document rounds them; the JSON keeps them whole.
"""

import json
import sys


def num(x, digits=0):
    """A figure with thousands separators, `digits` decimals."""
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def table(head, rows, align=None):
    align = align or ["---"] + ["---:"] * (len(head) - 1)
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def secs(d):
    """A serde Duration ({secs, nanos}) in seconds."""
    return d["secs"] + d["nanos"] / 1e9 if isinstance(d, dict) else d


def throughput(s):
    base = s["baseline"]["changes_per_s"]
    rows = []
    for r in [s["baseline"]] + s["pipeline"]:
        mark = " TIMED OUT" if r["timed_out"] else ""
        rows.append([
            r["mode"], r["in_flight"], num(r["changes"]), num(r["changes_per_s"]) + mark,
            f"{r['changes_per_s'] / base:.1f}×", f"{r['rpcs_per_change']:.2f}",
        ])
    return table(["mode", "in flight", "changes", "changes/s", "vs sequential", "RPCs/change"], rows)


def calls_by_op(settings, in_flight=(64, 256)):
    ops, cols = [], []
    for s in settings:
        for r in s["pipeline"]:
            if r["in_flight"] in in_flight:
                cols.append((f"{s['name']}, M = {r['in_flight']}", r))
                ops += [o for o in r["calls"] if o not in ops]
    rows = []
    for op in sorted(ops):
        rows.append([op] + [f"{r['calls'].get(op, 0) / r['changes']:.3f}" for _, r in cols])
    rows.append(["**total**"] + [f"**{r['rpcs_per_change']:.2f}**" for _, r in cols])
    return table(["call"] + [c for c, _ in cols], rows)


def ceiling(report):
    out = []
    by = {}
    for c in report["ceiling"]:
        for r in c["rates"]:
            by.setdefault((r["service"], r["rpc"]), {})[r["concurrency"]] = r["per_s"]
    concs = sorted({k for v in by.values() for k in v})
    rows = [[s, rpc] + [num(v.get(c)) + "/s" for c in concs] for (s, rpc), v in by.items()]
    out.append(table(["service", "RPC"] + [f"{c} in flight" for c in concs], rows,
                     ["---", "---"] + ["---:"] * len(concs)))
    rows = []
    for c in report["ceiling"]:
        conc = c["rates"][0]["concurrency"] if c["rates"] else 0
        per = ", ".join(f"{p['service']} {num(p['changes_per_s'])}" for p in c["per_service"])
        rows.append([conc, per, num(c["ceiling"]), num(c.get("cpu_ceiling"))])
    out.append(table(["in flight", "changes/s each service allows", "ceiling", "CPU bound"], rows))
    return "\n\n".join(out)


def cpu_by_process(report):
    """CPU µs per recovered change by process in the emulator pipeline runs."""
    cols = []
    emu = [s for s in report["settings"] if s["name"] == "emulators"]
    for s in emu:
        for r in s["pipeline"]:
            if r.get("cpu") and r["in_flight"] in (1, 8, 64, 128, 256):
                per = {n: v / r["changes"] * 1e6 for n, v in r["cpu"]["by_process"].items()}
                busy = sum(r["cpu"]["by_process"].values()) / r["cpu"]["wall_s"]
                cols.append((f"M = {r['in_flight']} ({busy:.2f} cores busy)", per))
    procs = sorted({p for _, per in cols for p in per})
    rows = [[p] + [num(per.get(p)) for _, per in cols] for p in procs]
    rows.append(["**all**"] + [f"**{num(sum(per.values()))}**" for _, per in cols])
    return table(["process"] + [c for c, _ in cols], rows)


def lost_claims(settings):
    rows = []
    for s in settings:
        for r in s["lost_claims"]:
            split = "no" if r["mode"].endswith("unsplit") else "yes"
            won = r["changes"] + r["claims_lost"]
            rows.append([s["name"], split, num(r["claims_lost"]),
                         f"{100 * r['claims_lost'] / won:.0f} %"])
    return table(["setting", "shard split", "claims lost", "lost / claims"], rows,
                 ["---", "---", "---:", "---:"])


def lag(settings):
    rows = []
    for s in settings:
        l = s.get("lag")
        if l:
            rows.append([s["name"], num(l["crashed"]), num(l["converged"]), f"{num(l['p50_ms'])} ms",
                         f"{num(l['p99_ms'])} ms", f"{num(l['max_ms'])} ms"])
    return table(["setting", "crashed", "converged", "p50", "p99", "max"], rows)


def write_latency(report):
    out = []
    wl = report["write_latency"]
    for setting in dict.fromkeys(w["setting"] for w in wl):
        rows = []
        of = [w for w in wl if w["setting"] == setting]
        for w in of:
            noop = next((n for n in of if n["changelog"] == "noop" and n["op"] == w["op"]
                         and n["model"] == w["model"]), None)
            ratio = (f"{w['p50_us'] / noop['p50_us']:.2f}× / {w['p99_us'] / noop['p99_us']:.2f}×"
                     if noop else "")
            rows.append([w["model"], w["changelog"], w["op"], f"{w['p50_us'] / 1000:.2f} ms",
                         f"{w['p99_us'] / 1000:.2f} ms", ratio])
        out.append(f"*{setting}*\n\n" + table(
            ["model", "writer", "op", "p50", "p99", "vs no-op p50 / p99"], rows,
            ["---", "---", "---", "---:", "---:", "---:"]))
    u = report.get("upload_split")
    if u:
        out.append(f"upload split: whole p50 {u['whole_p50_us']} µs, after the last byte "
                   f"p50 {u['after_last_byte_p50_us']} µs "
                   f"({100 * u['after_last_byte_p50_us'] / u['whole_p50_us']:.0f} %), "
                   f"{u['samples']} samples of {u['bytes']} bytes")
    return "\n\n".join(out)


def memory(report):
    rows = []
    for m in report["memory"]:
        samples = m["samples"]
        mid = f"{samples[0][1]:.1f} → {samples[-1][1]:.1f} MiB" if samples else ""
        cpu = f"{m['cpu_s'] / m['items'] * 1e6:,.0f} µs" if m.get("cpu_s") and m["items"] else ""
        rows.append([m["worker"], num(m["items"]), f"{m['seconds']:.0f} s",
                     f"{m['idle_mib']:.1f} MiB", mid, f"**{m['peak_mib']:.1f} MiB**", cpu])
    return table(["process", "items", "took", "idle RSS", "RSS as it went", "peak (VmHWM)",
                  "CPU per item"], rows, ["---"] + ["---:"] * 6)


def worker_cpu(report):
    rows = []
    for w in report["worker_cpu"]:
        n = w["changes"]
        us = (w["scan_cpu_s"] + w["clean_cpu_s"]) / n * 1e6
        idle = w.get("idle_cores")
        work = us - idle * w["seconds"] / n * 1e6 if idle is not None else None
        rows.append([w["variant"], w["shape"], f"{w['first_pass_s']:.0f} s", f"{w['seconds']:.0f} s",
                     f"{w['scan_cpu_s']:.1f} s", f"{w['clean_cpu_s']:.1f} s", num(us),
                     f"{idle:.3f}" if idle is not None else "—", f"**{num(work)}**",
                     f"{w['spans'] / n:.1f}", f"{w['log_lines'] / n:.2f}"])
    out = [table(["variant", "crashed", "first pass", "all removed", "scan CPU", "clean CPU",
                  "µs per change", "idle (cores)", "work µs per change", "spans per change",
                  "log lines per change"], rows, ["---", "---"] + ["---:"] * 9)]
    for w in report["worker_cpu"][:1]:
        out.append("counters per change (" + w["variant"] + ", " + w["shape"] + "): " + ", ".join(
            f"{k} {v:.2f}" for k, v in w["counters_per_change"]))
        out.append("spans per change: " + ", ".join(
            f"{k} {v:.2f}" for k, v in w["spans_per_change"]))
    return "\n\n".join(out)


def offered_load(report):
    rows = []
    for o in report["offered_load"]:
        cpu = o["scan_cpu_s"] + o["clean_cpu_s"]
        rows.append([num(o["offered_per_s"]), num(o["crashed_per_s"]), f"{o['window_s']:.0f} s",
                     num(o["passes"]), num(o["passes_per_s"]), f"{o['scan_cpu_s']:.1f} s",
                     f"{o['clean_cpu_s']:.1f} s",
                     num(o["scan_cpu_s"] / max(o["passes"], 1) * 1e6),
                     num(o["clean_cpu_s"] / max(o["passes"], 1) * 1e6),
                     f"**{num(cpu / max(o['passes'], 1) * 1e6)}**",
                     f"{cpu / o['window_s']:.2f}"])
    return table(["offered (crashes/s)", "recorded (/s)", "window", "first passes", "per s",
                  "scan CPU", "clean CPU", "scan µs per pass", "clean µs per pass",
                  "µs per pass", "cores (both)"], rows, ["---:"] * 11)


def cost(report):
    rows = []
    for c in report["cost"]:
        rows.append([c["per"], num(c["bigtable_rpcs_total"]), num(c["bigtable_rows"]),
                     num(c["gcs_class_a"]), num(c["gcs_class_b"]), num(c["gcs_free"]),
                     num(c["pubsub_requests"]), num(c["pubsub_messages"]),
                     f"{c['pubsub_billed_gb']:.2f}", num(c.get("cpu_s"))])
    return table(["per million", "Bigtable RPCs", "Bigtable rows", "GCS class A", "GCS class B",
                  "GCS deletes (free)", "Pub/Sub requests", "Pub/Sub messages", "Pub/Sub GB",
                  "worker CPU-s"], rows)


def shapes(settings):
    rows = []
    for s in settings:
        for x in s.get("shapes", []):
            rows.append([x["shape"], x["in_flight"], num(x["changes"]), num(x["changes_per_s"]),
                         f"{num(x['latency_p50_ms'], 1)} ms", f"{num(x['latency_p99_ms'], 1)} ms",
                         f"{x['rpcs_per_change']:.2f}"])
    return table(["shape", "M", "changes", "changes/s", "latency p50", "latency p99", "RPCs/change"],
                 rows) if rows else ""


def peers(p):
    rows = []
    for r in p["runs"]:
        c, a = r["cost"], r["admissions"]
        refused = (f"{a['gcs_mutations_refused'] / max(a['gcs_mutations'], 1):.2f} / "
                   f"{a['bigtable_refused'] / max(a['bigtable'], 1):.2f}")
        rows.append([r["peer"], f"{num(r['waits_s'])} s", f"{num(r['deleted_after_s'])} s",
                     f"{num(r['done_after_s'])} s", f"{c['bigtable_row_reads'] / 1e6:.1f} M",
                     f"{c['bigtable_row_writes'] / 1e6:.1f} M", num(c["gcs_class_a"]),
                     f"{c['gcs_class_b'] / 1e6:.1f} M", f"{c['gcs_free'] / 1e6:.1f} M",
                     f"{c['pubsub_billed_gb']:.2f}", num(c.get("cpu_s")), refused])
    first, last = p["lifecycle"]["deleted_after_s"]
    rows.append(["lifecycle rule", f"{num(first)} s", f"≤ {num(last)} s", "—", 0, 0, 0, 0,
                 "0 (free)", 0, 0, "—"])
    out = [table(["peer", "an orphan waits", "orphans deleted after", "work done after",
                  "Bigtable row reads", "row writes", "GCS class A", "class B", "deletes",
                  "Pub/Sub GB", "CPU s", "refused"], rows)]
    out.append("write-path tax per million large writes: " + "; ".join(
        f"{w['peer']} {num(w['bigtable_rows'])} Bigtable rows, {num(w['gcs_class_a'])} class A"
        for w in p["write_tax"]))
    for r in p["runs"]:
        out.append(f"{r['peer']} Bigtable RPCs by call per orphan: " + ", ".join(
            f"{k} {v / 1e6:.2f}" for k, v in r["cost"]["bigtable_rpcs"].items()))
    return "\n\n".join(out)


def drain(d):
    n = d["plan"]["backlog"]
    lines = [
        f"backlog {num(n)}; settle {secs(d['plan']['upload_settle']):.0f} s; blobs deleted after "
        f"{d['took_s']:.0f} s, rows removed after {d['done_s']:.0f} s; bound {d['bound_s']:.0f} s; "
        f"of the bound {d['of_bound']:.2f}",
        f"GCS utilisation {d['gcs_utilisation']:.2f}; Bigtable rows {d['bigtable_row_utilisation']:.2f}",
        f"refused until deleted: GCS {num(d['admissions']['gcs_mutations_refused'])} of "
        f"{num(d['admissions']['gcs_mutations'])}, Bigtable {num(d['admissions']['bigtable_refused'])} "
        f"of {num(d['admissions']['bigtable'])}; whole drain: GCS "
        f"{num(d['admissions_whole']['gcs_mutations_refused'])}, Bigtable "
        f"{num(d['admissions_whole']['bigtable_refused'])} of {num(d['admissions_whole']['bigtable'])}",
        "refused by call: " + ", ".join(f"{k} {num(v)}" for k, v in d["refused_by_op"].items()),
        "Bigtable rows per backlog change: " + ", ".join(
            f"{k} {v / n:.2f}" for k, v in d["bigtable_rows_by_op"].items()),
        f"claims won {num(d['claims_won'])}, re-claims {d['reclaims']}, claimed twice at once "
        f"{d['claimed_twice_at_once']}",
        f"fresh crashes {num(d['fresh_crashed'])} converged {num(d['fresh_converged'])}: lag p50 / p99 / max "
        f"{d['fresh_lag_p50_ms'] / 1000:.2f} / {d['fresh_lag_p99_ms'] / 1000:.2f} / "
        f"{d['fresh_lag_max_ms'] / 1000:.2f} s (threshold {d['staleness_threshold_ms']} ms)",
        "RSS (removed: MiB): " + ", ".join(f"{k}: {v:.0f}" for k, v in d["rss_mib"]),
    ]
    return "\n".join("* " + l for l in lines)


def elastic(e):
    period = secs(e["lease_period"])
    rows = [
        ["changes drained", f"{num(e['backlog'])}, {num(e['backlog'] - e['left'])} converged"],
        ["**rows claimed twice at once**",
         f"**{e['claimed_twice_at_once']}** ({num(e['claims_won'])} claims won, {e['reclaims']} re-claims)"],
        ["instants two members could read one shard", e["shared_shard_instants"]],
        ["grow 1 → 4: until four equal shares", f"{secs(e['grow']):.1f} s"],
        ["**takeover of a killed member's shards**",
         f"**{secs(e['takeover']):.1f} s = {secs(e['takeover']) / period:.2f} lease periods**"],
        ["shrink 4 → 1 by clean stops", f"{secs(e['shrink']):.1f} s"],
        ["whole drain", f"{secs(e['took']):.1f} s"],
    ]
    return table(["figure", "measured"], rows)


def scan_cost(c):
    rows = [[name, num(r["examined"]), num(r["found"]), f"**{r['examined_per_found']:.2f}**"]
            for name, r in (("key-bounded", c["key_bounded"]), ("full-range", c["full_range"]))]
    return table(["rounds", "rows examined", "stale rows found", "examined per found"], rows)


def main(path):
    r = json.load(open(path))
    print(f"commit {r.get('commit', '(not recorded)')}; machine {r['machine']}")
    print(f"command: `{r['command']}`\n")
    sections = [
        ("side by side", r.get("peers") and peers(r["peers"])),
        ("cloud throughput", [s for s in r["settings"] if s["name"] == "cloud"]),
        ("memory throughput", [s for s in r["settings"] if s["name"] == "memory"]),
        ("emulator throughput", [s for s in r["settings"] if s["name"] == "emulators"]),
    ]
    for title, body in sections:
        if isinstance(body, list):
            body = body and throughput(body[0])
        if body:
            print(f"## {title}\n\n{body}\n")
    if r["ceiling"]:
        print(f"## ceiling\n\n{ceiling(r)}\n\n{cpu_by_process(r)}\n")
    if r["settings"]:
        print(f"## calls per change\n\n{calls_by_op(r['settings'])}\n")
        print(f"## lost claims\n\n{lost_claims(r['settings'])}\n")
        print(f"## lag\n\n{lag(r['settings'])}\n")
    if r["write_latency"]:
        print(f"## write latency\n\n{write_latency(r)}\n")
    if r["memory"]:
        print(f"## memory\n\n{memory(r)}\n")
    if r.get("worker_cpu"):
        print(f"## worker CPU\n\n{worker_cpu(r)}\n")
    if r.get("offered_load"):
        print(f"## worker CPU at fixed offered loads\n\n{offered_load(r)}\n")
    if r.get("cost"):
        print(f"## cost\n\n{cost(r)}\n")
    sh = shapes(r["settings"])
    if sh:
        print(f"## shapes\n\n{sh}\n")
    for key, fn in (("drain", drain), ("elastic", elastic), ("scan_cost", scan_cost)):
        if r.get(key):
            print(f"## {key}\n\n{fn(r[key])}\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: bench_tables.py BENCH_JSON")
    main(sys.argv[1])
