#!/usr/bin/env python3
"""Lists import circles among the files (top-level modules) of each crate of the workspace.

A file `a.rs` depends on `b.rs` when its non-test code names `crate::b` (or `super::b` from a child
module). Exit status 1 when any crate has a circle; prints each circle found. Used by the redesign (#18):
run `scripts/module-cycles.py` from the repository root.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def crates():
    for toml in sorted(ROOT.glob("*/Cargo.toml")):
        if (toml.parent / "src").is_dir():
            yield toml.parent.name, toml.parent / "src"
    yield "rbuild (src/)", ROOT / "src"


def module_of(src: pathlib.Path, path: pathlib.Path) -> str:
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("lib", "main", "mod"):
        parts = parts[:-1]
    return parts[0] if parts else "<root>"


def strip_tests(text: str) -> str:
    # Drop `#[cfg(test)] mod tests { ... }` blocks: tests may name any module.
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def graph(src: pathlib.Path):
    edges = {}
    for path in src.rglob("*.rs"):
        me = module_of(src, path)
        text = strip_tests(path.read_text())
        text = re.sub(r"//.*", "", text)
        names = set(re.findall(r"\bcrate::(\w+)", text))
        names |= {n for n in re.findall(r"\bsuper::(\w+)", text)} if path.parent != src else set()
        for n in names:
            if n != me and ((src / f"{n}.rs").exists() or (src / n).is_dir()):
                edges.setdefault(me, set()).add(n)
    return edges


def cycles(edges):
    found, state, stack = [], {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                found.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n)
    return found


def main():
    bad = 0
    for name, src in crates():
        for c in cycles(graph(src)):
            bad += 1
            print(f"{name}: " + " -> ".join(c))
    if bad:
        print(f"{bad} import circle(s)")
        return 1
    print("no import circle among the files of any crate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
