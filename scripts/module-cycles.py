#!/usr/bin/env python3
"""Lists import circles among the files (top-level modules) of each crate of the workspace.

A file depends on another when its non-test code names a path into it (`crate::layer::gzip::X`,
`super::gzip::X`); a module declaring its children is not an import. Exit status 1 when any crate has a circle; prints each circle found. Used by the redesign (#18):
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


def module_path(src: pathlib.Path, path: pathlib.Path) -> tuple:
    """`layer/early.rs` -> ("layer", "early"); `layer/mod.rs` and `lib.rs` name their directory."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts and parts[-1] in ("lib", "main", "mod"):
        parts = parts[:-1]
    return tuple(parts)


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
    """Edges between files: a file depends on the deepest file module a `crate::a::b` or `super::x` path
    it names resolves to (not on its own ancestors: a parent declaring its children is no import)."""
    files = {module_path(src, p): p for p in src.rglob("*.rs")}
    edges = {}
    for me, path in files.items():
        text = re.sub(r"//.*", "", strip_tests(path.read_text()))
        targets = []
        # `crate::a::b`, `super::a`, and one level of braces: `super::{a, b::C}`.
        for root, rest in re.findall(r"\b(crate|super)((?:::\w+)*(?:::\{[^}]*\})?)", text):
            base = () if root == "crate" else me[:-1]
            head, _, group = rest.partition("{")
            head = tuple(p for p in head.split("::") if p)
            items = [g.strip() for g in group.rstrip("}").split(",")] if group else [""]
            for item in items:
                tail = tuple(p for p in item.split("::") if p and p != "self")
                targets.append(base + head + tail)
        for t in targets:
            # The deepest prefix of the path that is a file of this crate.
            for k in range(len(t), 0, -1):
                if t[:k] in files:
                    target = t[:k]
                    break
            else:
                continue
            if target != me and me[: len(target)] != target:
                edges.setdefault(me, set()).add(target)
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
            print(f"{name}: " + " -> ".join("::".join(m) or "<root>" for m in c))
    if bad:
        print(f"{bad} import circle(s)")
        return 1
    print("no import circle among the files of any crate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
