#!/usr/bin/env python3
"""Import cycles between the modules (files) of a crate's src/ directory; exit 1 if there is one.

A module depends on another when it names it (`crate::a::b`, `super::x`, or a child it declares
with `mod`). A parent and its own children are not counted against each other (a child using its
parent's types while the parent calls the child is how a Rust module tree works, e.g. config.rs
and config/validate.rs). Test modules are left out. Run by `make lint` on gateway/src and
cache/src; at 9bd0e32 it reported the three cycles issue 22 names (config → reasoning/verify →
routing/variant, cache/tenant → jobs → state, cache/flat ↔ cache/store).
"""
import os
import re
import sys


def modules(root):
    out = {}
    for dp, _, fs in os.walk(root):
        for f in fs:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dp, f), root)[:-3]
            if rel in ("lib", "main") or rel == "tests" or rel.endswith("/tests"):
                continue
            out[rel] = os.path.join(dp, f)
    return out


def expand_groups(code):
    """`crate::{a::X, b::{c, d}}` → `crate::a::X crate::b::c crate::b::d` (any depth), so grouped
    imports are seen like single ones."""
    out, i = [], 0
    pattern = re.compile(r"\b((?:crate|super)(?:::[a-z_][a-z_0-9]*)*)::\{")
    while True:
        m = pattern.search(code, i)
        if not m:
            out.append(code[i:])
            return "".join(out)
        out.append(code[i : m.start()])
        depth, j = 1, m.end()
        while j < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            j += 1
        inner, parts, depth, start = code[m.end() : j - 1], [], 0, 0
        for k, ch in enumerate(inner):
            depth += {"{": 1, "}": -1}.get(ch, 0)
            if ch == "," and depth == 0:
                parts.append(inner[start:k])
                start = k + 1
        parts.append(inner[start:])
        items = [p.strip() for p in parts if p.strip() and p.strip() != "self"]
        out.append(" ".join(expand_groups(f"{m.group(1)}::{p}") for p in items) + " ")
        i = j


def graph(root):
    files = modules(root)

    def resolve(path):
        parts, best = path.split("::"), None
        for i in range(1, len(parts) + 1):
            if "/".join(parts[:i]) in files:
                best = "/".join(parts[:i])
        return best

    g = {}
    for m, p in files.items():
        text = open(p).read()
        code = re.sub(r"#\[cfg\(test\)\]\s*mod tests \{.*", "", text, flags=re.S)
        code = expand_groups(re.sub(r"//.*", "", code))
        deps = set()
        for x in re.findall(r"\bcrate::([a-z_][a-z_0-9]*(?:::[a-z_][a-z_0-9]*)*)", code):
            deps.add(resolve(x))
        parent = "/".join(m.split("/")[:-1])
        for x in re.findall(r"\bsuper::([a-z_][a-z_0-9]*(?:::[a-z_][a-z_0-9]*)*)", code):
            deps.add(resolve(f"{parent}::{x}" if parent else x))
        for child in re.findall(r"^\s*(?:pub(?:\([a-z]+\))? )?mod ([a-z_0-9]+);", text, flags=re.M):
            if f"{m}/{child}" in files and re.search(rf"\b{child}::", code):
                deps.add(f"{m}/{child}")
        related = lambda a, b: b.startswith(a + "/") or a.startswith(b + "/")
        g[m] = {d for d in deps if d and d != m and not related(m, d)}
    return g


def cycles(g):
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(10000)
    for v in g:
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    found = False
    for root in sys.argv[1:]:
        for group in cycles(graph(root)):
            found = True
            print(f"{root}: import cycle among {', '.join(group)}")
    sys.exit(1 if found else 0)
