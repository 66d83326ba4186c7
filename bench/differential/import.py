#!/usr/bin/env python3
"""Turns public Dockerfile test suites into differential corpora (bench/differential/corpus/<name>/).

  import.py buildah BUILDAH_CHECKOUT     buildah's tests/bud/* contexts: one case per Dockerfile/Containerfile
  import.py buildkit BUILDKIT_CHECKOUT   the inline Dockerfiles (and the files their tests create) of
                                        BuildKit's frontend/dockerfile/dockerfile_*_test.go

Both are Apache-2.0; the corpus keeps their LICENSE and a SOURCE file naming the commit. Bases are rewritten to
the lab's images (127.0.0.1:5000): alpine/busybox -> busybox:1.35, debian/ubuntu/fedora/… -> debian:bookworm.
Dockerfiles that the lab's BuildKit cannot parse at all (a `# syntax=` line, heredocs) are left out; the
rest are all kept, and the differential counts only the cases BuildKit builds.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
BUSYBOX = "127.0.0.1:5000/library/busybox:1.35"
DEBIAN = "127.0.0.1:5000/library/debian:bookworm"
SMALL = re.compile(r"^(docker\.io/)?(library/)?(alpine|busybox)(:[^\s@]*)?(@\S+)?$", re.I)
BIG = re.compile(r"^(docker\.io/|registry\.fedoraproject\.org/|quay\.io/[^/]+/)?(library/)?"
                 r"(debian|ubuntu|fedora|centos|golang|node|python)(:[^\s@]*)?(@\S+)?$", re.I)
FROM = re.compile(r"^(\s*FROM\s+(?:--platform=\S+\s+)?)(\S+)(.*)$", re.I)


def rewrite(dockerfile):
    """The Dockerfile with its bases rewritten, or None when the lab's BuildKit cannot take it."""
    if re.search(r"^\s*#\s*syntax\s*=", dockerfile, re.I | re.M) or re.search(r"<<-?[\"']?[A-Za-z]", dockerfile):
        return None
    out = []
    for line in dockerfile.splitlines(keepends=True):
        m = FROM.match(line)
        if m:
            image = m.group(2)
            if SMALL.match(image):
                line = m.group(1) + BUSYBOX + m.group(3) + ("\n" if line.endswith("\n") else "")
            elif BIG.match(image):
                line = m.group(1) + DEBIAN + m.group(3) + ("\n" if line.endswith("\n") else "")
        out.append(line)
    text = "".join(out)
    # No stage at all: nothing to compare, and it crashes dockerd 20.10's BuildKit (lastTarget, index -1).
    if not re.search(r"^\s*FROM\s", text, re.I | re.M):
        return None
    # Every base must be reachable without the internet: the lab's images, scratch, or an earlier stage.
    stages = set()
    for line in text.splitlines():
        m = FROM.match(line)
        if not m:
            continue
        image = m.group(2).lower()
        if image not in (BUSYBOX, DEBIAN, "scratch") and image not in stages:
            return None
        alias = re.search(r"\s+as\s+(\S+)", m.group(3), re.I)
        if alias:
            stages.add(alias.group(1).lower())
    # Long sleeps (tests of killing a build) would hold the differential for minutes per build.
    if any(int(n) >= 30 for n in re.findall(r"^\s*RUN\b.*\bsleep\s+(\d+)", text, re.I | re.M)):
        return None
    # Package managers of other distributions cannot work on busybox/debian.
    if re.search(r"\b(apk|dnf|yum|microdnf|zypper)\s", text):
        return None
    return text


def commit_of(checkout):
    return subprocess.run(["git", "--git-dir", checkout, "rev-parse", "HEAD"], check=True,
                          stdout=subprocess.PIPE, text=True).stdout.strip()


def export(checkout, paths, dest):
    """`git archive HEAD PATHS` of a bare mirror, unpacked into dest."""
    os.makedirs(dest, exist_ok=True)
    archive = subprocess.run(["git", "--git-dir", checkout, "archive", "HEAD", *paths], check=True,
                             stdout=subprocess.PIPE).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)


def start_corpus(name, checkout, what):
    corpus = os.path.join(HERE, "corpus", name)
    shutil.rmtree(corpus, ignore_errors=True)
    os.makedirs(corpus)
    export(checkout, ["LICENSE"], corpus)
    with open(os.path.join(corpus, "SOURCE"), "w") as f:
        f.write(f"{what}\nCommit {commit_of(checkout)}, licensed Apache-2.0 (LICENSE).\n"
                "Changes: bases rewritten to the lab's images (127.0.0.1:5000), cases split one per Dockerfile "
                "(bench/differential/import.py).\n")
    return corpus


def import_buildah(checkout):
    """One case per Dockerfile; the directories holding them are copied once, into .contexts/, with the
    Dockerfiles rewritten in place, and each case's `context` is a symlink to its directory there."""
    corpus = start_corpus("buildah-bud", checkout, "From github.com/containers/buildah, tests/bud/.")
    shared = os.path.join(corpus, ".contexts")
    with tempfile.TemporaryDirectory() as tmp:
        export(checkout, ["tests/bud"], tmp)
        bud = os.path.join(tmp, "tests", "bud")
        n = 0
        for top, dirs, files in os.walk(bud):
            dirs.sort()
            for f in sorted(files):
                if not re.match(r"^(Dockerfile|Containerfile)", f) or f.endswith((".dockerignore", ".containerignore")):
                    continue
                try:
                    with open(os.path.join(top, f)) as fh:
                        text = fh.read()
                except UnicodeDecodeError:
                    continue
                new = rewrite(text)
                if new is None or not re.search(r"^\s*FROM\s", new, re.I | re.M):
                    continue
                size = sum(os.path.getsize(os.path.join(t, x)) for t, _, fs in os.walk(top) for x in fs
                           if not os.path.islink(os.path.join(t, x)))
                if size > 256 * 1024:
                    continue
                rel = os.path.relpath(top, bud)
                ctx = os.path.join(shared, rel)
                if not os.path.isdir(ctx):
                    shutil.copytree(top, ctx, symlinks=True)
                with open(os.path.join(ctx, f), "w") as fh:
                    fh.write(new)
                case = os.path.join(corpus, (rel.replace(os.sep, "--") + "--" + f).replace(".", "_"))
                os.makedirs(case)
                os.symlink(os.path.relpath(ctx, case), os.path.join(case, "context"))
                if f != "Dockerfile":
                    with open(os.path.join(case, "dockerfile"), "w") as fh:
                        fh.write(f + "\n")
                n += 1
    print(f"buildah-bud: {n} cases")


GO_RAW = r"`([^`]*)`"


def import_buildkit(checkout):
    corpus = start_corpus("buildkit-dockerfile", checkout,
                          "From github.com/moby/buildkit, frontend/dockerfile/dockerfile_*_test.go: the "
                          "inline Dockerfiles and the files each test creates with fstest.CreateFile.")
    with tempfile.TemporaryDirectory() as tmp:
        export(checkout, ["frontend/dockerfile"], tmp)
        d = os.path.join(tmp, "frontend", "dockerfile")
        n = 0
        for f in sorted(os.listdir(d)):
            if not (f.startswith("dockerfile") and f.endswith("_test.go")):
                continue
            with open(os.path.join(d, f)) as fh:
                src = fh.read()
            for fn in re.split(r"\nfunc ", src)[1:]:
                name = fn.split("(", 1)[0]
                if not name.startswith("test"):
                    continue
                # One Dockerfile per test, a plain raw string (no Sprintf, no per-OS variants).
                dfs = re.findall(r"dockerfile :?= \[\]byte\(" + GO_RAW + r"\)", fn)
                if len(dfs) != 1 or "UnixOrWindows" in fn or "Sprintf" in fn.split("dockerfile", 1)[1][:80]:
                    continue
                new = rewrite(dfs[0])
                if new is None:
                    continue
                ctx = {}
                ok = True
                for m in re.finditer(r'fstest\.CreateFile\("([^"]+)",\s*(?:\[\]byte\((`[^`]*`|"(?:[^"\\]|\\.)*")\)|(\w+)),\s*0?o?(\d+)\)', fn):
                    path, lit, var, mode = m.group(1), m.group(2), m.group(3), m.group(4)
                    if path == "Dockerfile":
                        continue
                    if lit is None:
                        ok = False  # content from a variable: not worth guessing
                        break
                    body = lit[1:-1]
                    if lit.startswith('"'):
                        body = bytes(body, "utf-8").decode("unicode_escape")
                    ctx[path] = (body, int(mode, 8))
                if not ok:
                    continue
                case = os.path.join(corpus, f[len("dockerfile"):-len("_test.go")].strip("_") + "--" + name)
                os.makedirs(os.path.join(case, "context"))
                with open(os.path.join(case, "context", "Dockerfile"), "w") as fh:
                    fh.write(new)
                for path, (body, mode) in ctx.items():
                    p = os.path.join(case, "context", path)
                    os.makedirs(os.path.dirname(p), exist_ok=True)
                    with open(p, "w") as fh:
                        fh.write(body)
                    os.chmod(p, mode)
                for m in re.finditer(r'fstest\.CreateDir\("([^"]+)",\s*0?o?(\d+)\)', fn):
                    p = os.path.join(case, "context", m.group(1))
                    os.makedirs(p, exist_ok=True)
                    os.chmod(p, int(m.group(2), 8))
                for m in re.finditer(r'fstest\.Symlink\("([^"]+)",\s*"([^"]+)"\)', fn):
                    p = os.path.join(case, "context", m.group(2))
                    os.makedirs(os.path.dirname(p), exist_ok=True)
                    if not os.path.lexists(p):
                        os.symlink(m.group(1), p)
                n += 1
    print(f"buildkit-dockerfile: {n} cases")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("buildah", "buildkit"):
        sys.exit(__doc__)
    {"buildah": import_buildah, "buildkit": import_buildkit}[sys.argv[1]](sys.argv[2])
