#!/usr/bin/env python3
"""Render a captured trace as an SVG waterfall (stdlib only).

Input: the JSON the cross-process trace test writes (one object per span, see
tests/traces.rs `to_json`). A scan page's trace holds every change that page claimed;
`--change` (default: the first claimed) keeps the scan, its own calls, and that one
change's subtree, which is what an operator following one change sees.

    python3 docs/tools/waterfall.py target/tmp/recovered-change-trace.json \
        docs/img/recovered-change-trace.svg
"""

import argparse
import html
import json
import sys

ROW = 22
LABEL_W = 430
BAR_W = 640
PAD = 12
COLORS = {"tiersweep-scanner": "#4c78a8", "tiersweep-cleaner": "#f58518"}
KIND = {
    "SPAN_KIND_PRODUCER": "producer",
    "SPAN_KIND_CONSUMER": "consumer",
    "SPAN_KIND_CLIENT": "client",
}


def select(spans, change):
    by_id = {s["span_id"]: s for s in spans}
    children = {}
    for s in spans:
        children.setdefault(s["parent_span_id"], []).append(s)
    claims = [s for s in spans if s["name"] == "claim"]
    if not claims:
        sys.exit("no claim span in the capture")
    if change is None:
        change = min(claims, key=lambda s: s["start_unix_nano"])["attributes"][
            "tiersweep.change_id"
        ]
    roots = [s for s in spans if s["parent_span_id"] not in by_id]
    keep = []

    def walk(span, depth):
        cid = span["attributes"].get("tiersweep.change_id")
        if cid is not None and cid != change:
            return
        keep.append((depth, span))
        for c in sorted(children.get(span["span_id"], []), key=lambda s: s["start_unix_nano"]):
            walk(c, depth + 1)

    for r in sorted(roots, key=lambda s: s["start_unix_nano"]):
        walk(r, 0)
    return change, keep


def label(span):
    a = span["attributes"]
    name = span["name"]
    kind = KIND.get(span["kind"])
    extra = []
    if kind:
        extra.append(kind)
    if "db.operation.name" in a:
        name = f'{a["db.operation.name"]} {a.get("db.collection.name", "")}'.strip()
    if span["name"] in ("process",) and "tiersweep.outcome" in a:
        extra.append(a["tiersweep.outcome"])
    return name + (f" ({', '.join(extra)})" if extra else "")


def render(change, rows):
    t0 = min(s["start_unix_nano"] for _, s in rows)
    t1 = max(s["end_unix_nano"] for _, s in rows)
    span_ns = max(t1 - t0, 1)
    height = PAD * 2 + ROW * (len(rows) + 2)
    width = LABEL_W + BAR_W + PAD * 3 + 70
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{PAD}" y="{PAD + 12}" font-weight="bold">recovered change {html.escape(change)}'
        f" — {span_ns / 1e6:.1f} ms, scanner (blue) → Pub/Sub → cleaner (orange)</text>",
    ]
    for i, (depth, s) in enumerate(rows):
        y = PAD + ROW * (i + 1) + 6
        x = LABEL_W + PAD * 2 + (s["start_unix_nano"] - t0) / span_ns * BAR_W
        w = max((s["end_unix_nano"] - s["start_unix_nano"]) / span_ns * BAR_W, 1.5)
        color = COLORS.get(s["service"], "#54a24b")
        if s.get("status") == 2:
            color = "#e45756"
        ms = (s["end_unix_nano"] - s["start_unix_nano"]) / 1e6
        out.append(
            f'<text x="{PAD + depth * 14}" y="{y + 13}">{html.escape(label(s))}</text>'
            f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{ROW - 8}" fill="{color}" rx="2"/>'
            f'<text x="{x + w + 4:.1f}" y="{y + 13}" fill="#555">{ms:.2f} ms</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("capture")
    p.add_argument("svg")
    p.add_argument("--change", help="change id to follow (default: the first claimed)")
    args = p.parse_args()
    with open(args.capture) as f:
        spans = json.load(f)
    change, rows = select(spans, args.change)
    with open(args.svg, "w") as f:
        f.write(render(change, rows))
    print(f"{args.svg}: {len(rows)} spans of change {change}")


if __name__ == "__main__":
    main()
