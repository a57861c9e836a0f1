#!/usr/bin/env python3
"""Counts the library's public items from rustdoc's JSON output, as an embedder sees them.

Walks the crate from its root through public modules and re-exports, and counts every
item it can name there: modules, types, traits, functions, constants, statics, macros
(each once, however many paths reach it). Methods, fields and variants belong to their
type and are not counted separately; items of other crates re-exported are not counted.

    cargo +nightly rustdoc -p tiersweep --lib -- -Z unstable-options --output-format json
    python3 docs/tools/public_items.py target/doc/tiersweep.json [--list]

It also lists, and fails on, the crate's items that public signatures name but no public
path reaches (a type a caller receives and cannot name, a trait whose methods it cannot
call).
"""
import collections
import json
import sys

COUNTED = {"module", "struct", "enum", "union", "trait", "function", "constant", "static",
           "type_alias", "macro", "trait_alias"}


def walk(doc):
    """Yields (path, kind, id) for every item reachable through public paths."""
    index = doc["index"]
    seen = set()
    stack = [(str(doc["root"]), [index[str(doc["root"])]["name"]])]
    while stack:
        id_, path = stack.pop()
        item = index.get(id_)
        if item is None or item["visibility"] != "public" and path[1:]:
            continue
        (kind, inner), = item["inner"].items()
        if kind == "use":
            target = inner.get("id")
            if target is None or str(target) not in index:
                continue  # another crate's item
            if inner["is_glob"]:
                stack.append((str(target), path))
            else:
                stack.append((str(target), path[:-1] + [inner["name"]] if path[1:] else path + [inner["name"]]))
            continue
        if id_ in seen:
            continue
        seen.add(id_)
        if kind in COUNTED and path[1:]:
            yield "::".join(path), kind, id_
        if kind == "module":
            for child in inner["items"]:
                child_item = index.get(str(child))
                name = child_item and child_item["name"]
                stack.append((str(child), path + [name] if name else path + ["?"]))


def referenced(node, out):
    """Collects the ids of the items a signature, field or variant names."""
    if isinstance(node, dict):
        if isinstance(node.get("path"), str) and "id" in node:
            out.add(str(node["id"]))
        for value in node.values():
            referenced(value, out)
    elif isinstance(node, list):
        for value in node:
            referenced(value, out)


def unnameable(doc, items):
    """Items of this crate that public items name in their signatures, public fields,
    variants or inherent methods, but that no public path reaches: a caller gets them and
    cannot write their names (or, for a trait, cannot call its methods)."""
    index, reachable = doc["index"], {id_ for _, _, id_ in items}
    found = collections.defaultdict(set)
    for path, kind, id_ in items:
        inner = index[id_]["inner"][kind]
        parts = []
        if kind in ("struct", "enum", "union"):
            for impl_id in inner.get("impls", []):
                impl = index.get(str(impl_id), {}).get("inner", {}).get("impl")
                if impl and impl.get("trait") is None:
                    parts += [index[str(m)] for m in impl["items"] if str(m) in index
                              and index[str(m)]["visibility"] == "public"]
            fields = inner.get("kind", {})
            fields = fields.get("plain", {}).get("fields", []) if isinstance(fields, dict) else []
            parts += [index[str(f)] for f in fields if index[str(f)]["visibility"] == "public"]
            parts += [index[str(v)] for v in inner.get("variants", [])]
        elif kind == "trait":
            parts += [index[str(m)] for m in inner["items"]]
        else:
            parts.append(index[id_])
        out = set()
        for part in parts:
            referenced(part["inner"], out)
        for ref in out:
            item = index.get(ref)
            if item and item["crate_id"] == 0 and ref not in reachable and item["name"]:
                found[ref].add(path)
    names = {ref: "::".join(doc["paths"].get(ref, {}).get("path", [index[ref]["name"]]))
             for ref in found}
    return sorted((names[ref], sorted(users)) for ref, users in found.items())


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    items = list(walk(doc))
    if "--list" in sys.argv:
        for path, kind, _ in sorted(items):
            print(f"{kind:12} {path}")
    by_module = collections.Counter(
        path.split("::")[1] if path.count("::") >= 2 else "(root)" for path, _, _ in items
    )
    for module, n in by_module.most_common():
        print(f"{n:5} {module}")
    print(f"{len(items):5} public items")
    hidden = unnameable(doc, items)
    for name, users in hidden:
        print(f"unnameable: {name} (named by {', '.join(users[:3])})")
    return 1 if hidden else 0


if __name__ == "__main__":
    sys.exit(main())
