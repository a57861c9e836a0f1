#!/usr/bin/env python3
"""Folds `perf script` output into one line per distinct stack: `root;...;leaf count`, the
input of flame-graph tools, small enough to commit beside the figures it explains.

    perf script -i clean.data | docs/tools/fold_perf.py > docs/img/clean.folded
    docs/tools/fold_perf.py --top 25 < docs/img/clean.folded   # self time by function
    docs/tools/fold_perf.py --share tracing h2 < docs/img/clean.folded
        # share of samples with a frame containing each word (overlapping)
    docs/tools/fold_perf.py --owners < docs/img/clean.folded
        # each sample to the nearest frame of a known owner (logs, traces, HTTP/2, ...)

Symbols are shortened: Rust hashes and generic arguments are dropped, so that one
function inlined into several callers still reads as one name.
"""
import re
import sys
from collections import Counter


def short(sym: str) -> str:
    sym = re.sub(r"\+0x[0-9a-f]+$", "", sym.strip())
    sym = re.sub(r"::h[0-9a-f]{16}$", "", sym)
    # `<Type as Trait>::method` reads as `Type::method`.
    m = re.match(r"^<(.+?) as .+?>(::.*)$", sym)
    if m:
        sym = m.group(1) + m.group(2)
    depth, out = 0, []
    for ch in sym:  # drop <...> generic arguments, keep the path
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
    return "".join(out).replace(";", ":") or "[unknown]"


def fold(lines):
    stacks = Counter()
    frames, comm = [], None
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if comm is not None:
                stacks[";".join([comm] + frames[::-1])] += 1
            frames, comm = [], None
        elif not line.startswith((" ", "\t")):
            comm = line.split()[0]
        else:
            parts = line.strip().split(None, 1)
            sym = parts[1] if len(parts) > 1 else "[unknown]"
            sym = re.sub(r"\s+\([^)]*\)$", "", sym)  # the (dso) suffix
            frames.append(short(sym))
    if comm is not None:
        stacks[";".join([comm] + frames[::-1])] += 1
    return stacks


def top(lines, n):
    self_time, total = Counter(), 0
    for line in lines:
        stack, count = line.rsplit(" ", 1)
        self_time[stack.split(";")[-1]] += int(count)
        total += int(count)
    for name, c in self_time.most_common(n):
        print(f"{100 * c / total:5.1f} %  {name}")


# Who a sample's time belongs to: walking from the leaf towards the root, the first frame
# that names one of these owns it (so an allocation or a system call counts for the code
# that made it). Checked in this order at each frame.
OWNERS = [
    ("tracing_opentelemetry", "traces: span data"),
    ("opentelemetry", "traces: export"),
    ("json_log", "logs"),
    ("tracing_subscriber::fmt", "logs"),
    ("tracing_subscriber", "spans: bookkeeping"),
    ("tracing_core", "spans: bookkeeping"),
    ("tracing::", "spans: bookkeeping"),
    ("prost", "protobuf"),
    ("h2::", "HTTP/2, gRPC"),
    ("hyper", "HTTP/2, gRPC"),
    ("tonic", "HTTP/2, gRPC"),
    ("tower", "HTTP/2, gRPC"),
    ("reqwest", "HTTP/1.1 (GCS)"),
    ("bigtable_rs", "Google clients"),
    ("google_cloud", "Google clients"),
    ("tiersweep", "tiersweep"),
    ("tokio", "tokio: scheduler, timers, I/O driver"),
]


def owners(lines):
    owned, total = Counter(), 0
    for line in lines:
        stack, count = line.rsplit(" ", 1)
        total += int(count)
        owner = "other (libc, kernel, thread start)"
        for frame in reversed(stack.split(";")[1:]):
            hit = next((name for word, name in OWNERS if word in frame), None)
            if hit:
                owner = hit
                break
        owned[owner] += int(count)
    for name, c in owned.most_common():
        print(f"{100 * c / max(total, 1):5.1f} %  {name}")


def share(lines, words):
    hits, total = Counter(), 0
    for line in lines:
        stack, count = line.rsplit(" ", 1)
        total += int(count)
        for w in words:
            if w in stack:
                hits[w] += int(count)
    for w in words:
        print(f"{100 * hits[w] / max(total, 1):5.1f} %  {w}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--top":
        top(sys.stdin, int(sys.argv[2]))
    elif sys.argv[1:] == ["--owners"]:
        owners(sys.stdin)
    elif len(sys.argv) > 2 and sys.argv[1] == "--share":
        share(sys.stdin, sys.argv[2:])
    else:
        for stack, count in sorted(fold(sys.stdin).items()):
            print(f"{stack} {count}")
