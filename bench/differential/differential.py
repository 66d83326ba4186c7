#!/usr/bin/env python3
"""Differential test of rbuild against BuildKit: same Dockerfile and context, compare the images.

Each case is built by BuildKit (the lab's dockerd 20.10, `../shared/lab/up.sh`) twice with --no-cache and
by rbuild once. Every image is copied into an OCI layout with skopeo, unpacked with `umoci unpack`, and
turned into a listing: one line per path (type, mode, owner, content digest or link target or device
numbers) and one per image-config field (history entries included). What differs between BuildKit's own
two builds is volatile (dates, logs, caches) and left out; everything else must be equal.

Commands (run as root, from anywhere):

  differential.py run [--rbuild BIN] [CORPUS ...]   lab: build every case of each corpus (default: all
                                                    under corpus/) and write results/<corpus>.json
  differential.py record CASE_DIR ...               lab: record BuildKit's listing of each case into
                                                    CASE_DIR/expected.txt (the CI fixtures)
  differential.py summary results/NAME.json ...     the figures again, with the current KNOWN table
  differential.py list OCI_LAYOUT                   the listing of the single image in an OCI layout
  differential.py check CASE_DIR OCI_LAYOUT         compare a layout with a case's recorded listing
                                                    (expected.txt + current-buildkit.txt; exit 1 on
                                                    differences)

A corpus is a directory (a name under corpus/, or a path) of case directories; a case holds `context/`
(the build context, `Dockerfile` in it), optionally `dockerfile` (another Dockerfile path, relative to the
context) and `build-args` (`K=V` words), and, for recorded cases, `expected.txt`.
"""

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DOCKER = "/usr/bin/docker"  # the 20.10 client: the newer one on PATH has no buildx plugin
VOLATILE = "*volatile*"


def sh(args, **kw):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def to_layout(src, dest):
    """skopeo copy SRC (docker-archive:… or oci:…) into the OCI layout DEST as `app`."""
    sh(["skopeo", "copy", "-q", src, f"oci:{dest}:app"])


def config_of(layout):
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    desc = next(m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "app")
    with open(os.path.join(layout, "blobs", *desc["digest"].split(":"))) as f:
        manifest = json.load(f)
    with open(os.path.join(layout, "blobs", *manifest["config"]["digest"].split(":"))) as f:
        return json.load(f)


def file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def tree_lines(rootfs):
    """`/path\tTYPE MODE UID:GID DETAIL` for every path below rootfs (symlinks not followed)."""
    out = {"/": entry(rootfs)}
    for top, dirs, files in os.walk(rootfs):
        dirs.sort()
        for name in sorted(dirs + files):
            p = os.path.join(top, name)
            out["/" + os.path.relpath(p, rootfs)] = entry(p)
    return out


def entry(p):
    st = os.lstat(p)
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        kind, detail = "dir", ""
    elif stat.S_ISREG(st.st_mode):
        kind, detail = "file", f"{st.st_size} {file_digest(p)}"
    elif stat.S_ISLNK(st.st_mode):
        kind, detail, mode = "link", "-> " + os.readlink(p), 0o777
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        kind = "char" if stat.S_ISCHR(st.st_mode) else "block"
        detail = f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
    elif stat.S_ISFIFO(st.st_mode):
        kind, detail = "fifo", ""
    else:
        kind, detail = "socket", ""
    return f"{kind} {mode:04o} {st.st_uid}:{st.st_gid} {detail}".rstrip()


def empty(v):
    return v is None or v == [] or v == {} or v == ""


def config_lines(cfg):
    """`config:FIELD\\tJSON` for the image config; absent, null and empty are the same."""
    out = {}
    for k in ("architecture", "os", "variant", "created", "author"):
        if not empty(cfg.get(k)):
            out[f"config:{k}"] = json.dumps(cfg[k])
    for k, v in sorted((cfg.get("config") or {}).items()):
        if not empty(v):
            out[f"config:Config.{k}"] = json.dumps(v, sort_keys=True)
    for i, h in enumerate(cfg.get("history") or []):
        out[f"config:history[{i}]"] = json.dumps(
            [h.get("created_by", ""), bool(h.get("empty_layer", False)), h.get("comment", "")]
        )
        if h.get("created"):
            out[f"config:history[{i}].created"] = h["created"]
    out["config:history.len"] = str(len(cfg.get("history") or []))
    out["config:rootfs.diff_ids"] = json.dumps((cfg.get("rootfs") or {}).get("diff_ids") or [])
    return out


def listing(src):
    """The listing of one image (a skopeo source such as `oci:DIR` or `docker-archive:FILE`): its tree
    (`umoci unpack`) and its config."""
    with tempfile.TemporaryDirectory(prefix="difflist-") as tmp:
        layout = os.path.join(tmp, "oci")
        to_layout(src, layout)
        bundle = os.path.join(tmp, "bundle")
        sh(["umoci", "unpack", "--image", f"{layout}:app", bundle])
        lines = tree_lines(os.path.join(bundle, "rootfs"))
        lines.update(config_lines(config_of(layout)))
    return lines


def read_listing(path):
    out = {}
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            k, _, v = line.rstrip("\n").partition("\t")
            out[k] = v
    return out


def expected_listing(case):
    """A case's recorded listing (expected.txt) with its `current-buildkit.txt` lines applied: where the
    lab's BuildKit (0.8, in dockerd 20.10) differs from current BuildKit, the case says what current
    BuildKit does and why (a comment line before each), and that is what rbuild must match."""
    lines = read_listing(os.path.join(case, "expected.txt"))
    apply_overrides(lines, case)
    return lines


def apply_overrides(lines, case):
    override = os.path.join(case, "current-buildkit.txt")
    if os.path.exists(override):
        for k, v in read_listing(override).items():
            if v == "<absent>":
                lines.pop(k, None)
            else:
                lines[k] = v


def write_listing(path, lines, header):
    with open(path, "w") as f:
        for h in header:
            f.write(f"# {h}\n")
        for k in sorted(lines):
            f.write(f"{k}\t{lines[k]}\n")


def volatile_keys(a, b):
    return {k for k in set(a) | set(b) if a.get(k) != b.get(k)}


# Not compared: the layer tars' digests. They change with any tar header detail (mtimes, PAX records,
# entry order) while the unpacked trees, which are compared, are what an image's user sees.
NOT_COMPARED = {"config:rootfs.diff_ids"}


def compare(expected, actual, volatile):
    """Differences as `key: buildkit=… rbuild=…` lines, volatile keys left out."""
    diffs = []
    for k in sorted(set(expected) | set(actual)):
        if k in volatile or k in NOT_COMPARED or expected.get(k) == VOLATILE:
            continue
        if expected.get(k) != actual.get(k):
            diffs.append(f"{k}: buildkit={expected.get(k, '<absent>')} rbuild={actual.get(k, '<absent>')}")
    return diffs


def buildkit_listing(ctx, dockerfile, args, tag, tmp):
    env = dict(os.environ, DOCKER_HOST="unix:///tmp/lab/docker.sock", DOCKER_BUILDKIT="1")
    try:
        # Host network, as rbuild's RUN has by default (and as bench/run.sh builds): no docker0 needed.
        sh([DOCKER, "build", "--network=host", "--no-cache", "-q", "-t", tag, "-f", dockerfile, *args, ctx],
           env=env)
        archive = os.path.join(tmp, "bk.tar")
        sh([DOCKER, "save", "-o", archive, tag], env=env)
        lines = listing(f"docker-archive:{archive}")
        os.remove(archive)
        return lines
    finally:
        # The tag only (a failed build has none): images other lab users made are left alone.
        subprocess.run([DOCKER, "rmi", "-f", tag], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def rbuild_listing(rbuild, store, ctx, dockerfile, args, tmp):
    out = os.path.join(tmp, "rb-out")
    shutil.rmtree(out, ignore_errors=True)
    # --network host as docker's build above (it also grants RUN --network=host, as dockerd does).
    sh([rbuild, "--root", store, "build", "--progress", "plain", "--network", "host", "-f", dockerfile,
        *args, "-o", f"type=oci,dest={out},tar=false", ctx])
    lines = listing(f"oci:{out}")
    shutil.rmtree(out)
    return lines


# Differences that have a known cause, by the diff line they produce (`key: buildkit=… rbuild=…`).
# "lab-0.8": the lab's BuildKit (0.8, in dockerd 20.10) differs from current BuildKit there and rbuild
# follows current BuildKit (source named).
KNOWN = [
    ("lab-0.8", "COPY/ADD history names --chown/--chmod (current dispatchCopy writes them)",
     re.compile(r'^config:history\[\d+\]: buildkit=\["(COPY|ADD) (?!--)([^"]*)", (.*) '
                r'rbuild=\["\1 (?:--ch(?:own|mod)=\S+ )+\2", \3$')),
    ("lab-0.8", "a bare ARG's history has the value it takes from a global or automatic platform arg "
                "(current dispatchArg sets it from globalArgs before writing the history)",
     re.compile(r'^config:history\[\d+\]: buildkit=\["ARG (\w+)", (.*) rbuild=\["ARG \1=[^"]*", \2$')),
    ("lab-0.8", "HEALTHCHECK history (current: %+v, d67dafe)",
     re.compile(r'^config:history\[\d+\]: buildkit=\["HEALTHCHECK &')),
    ("lab-0.8", "Docker-only config fields dropped by dockerd 20.10's exporter (current BuildKit keeps "
                "Healthcheck, OnBuild and Shell: dockerspec.DockerOCIImage)",
     re.compile(r'^config:Config\.(Healthcheck|OnBuild|Shell): buildkit=<absent> ')),
    ("lab-0.8", "mount stub left in the layer (removed since BuildKit 0.9: executor MountStubsCleaner)",
     re.compile(r'^/\S+: buildkit=dir 0755 0:0 rbuild=<absent>$')),
    ("lab-0.8", "COPY --from skips fifos (copied since fsutil 331e532, BuildKit 0.10)",
     re.compile(r'^/\S+: buildkit=<absent> rbuild=fifo ')),
]


def classify(diff):
    for kind, why, rx in KNOWN:
        if rx.search(diff):
            return kind, why
    return None, None


def parse_case(case):
    """(context dir, Dockerfile path, build args) of a case directory."""
    ctx = os.path.join(case, "context")
    df = "Dockerfile"
    if os.path.exists(os.path.join(case, "dockerfile")):
        with open(os.path.join(case, "dockerfile")) as f:
            df = f.read().strip()
    args = []
    if os.path.exists(os.path.join(case, "build-args")):
        with open(os.path.join(case, "build-args")) as f:
            for a in f.read().split():
                args += ["--build-arg", a]
    return ctx, os.path.join(ctx, df), args


def corpus_dir(name):
    return name if os.sep in name else os.path.join(HERE, "corpus", name)


def err_text(e):
    if isinstance(e, subprocess.CalledProcessError):
        return (e.stderr or e.stdout or str(e)).strip().splitlines()[-3:]
    return [str(e)]


def cmd_run(argv):
    rbuild = os.path.join(HERE, "..", "..", "target", "debug", "rbuild")
    if argv[:1] == ["--rbuild"]:
        rbuild, argv = argv[1], argv[2:]
    rbuild = os.path.abspath(rbuild)
    corpora = argv or sorted(d for d in os.listdir(os.path.join(HERE, "corpus")))
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    summary = []
    for name in corpora:
        cdir = corpus_dir(name)
        name = os.path.basename(os.path.normpath(cdir))
        results = []
        with tempfile.TemporaryDirectory(prefix="differential-") as tmp:
            store = os.path.join(tmp, "store")
            for i, case in enumerate(sorted(os.listdir(cdir))):
                if case.startswith(".") or not os.path.isdir(os.path.join(cdir, case, "context")):
                    continue
                ctx, df, args = parse_case(os.path.join(cdir, case))
                t0 = time.time()
                r = {"case": case}
                try:
                    a = buildkit_listing(ctx, df, args, f"differential-{i}", tmp)
                    b = buildkit_listing(ctx, df, args, f"differential-{i}", tmp)
                except Exception as e:  # BuildKit itself fails: not counted
                    r.update(status="buildkit-failed", error=err_text(e))
                    results.append(r)
                    print(f"[{name}] {case}: BuildKit fails, not counted", flush=True)
                    continue
                vol = volatile_keys(a, b)
                apply_overrides(a, os.path.join(cdir, case))
                try:
                    c = rbuild_listing(rbuild, store, ctx, df, args, tmp)
                except Exception as e:
                    r.update(status="rbuild-failed", error=err_text(e))
                    results.append(r)
                    print(f"[{name}] {case}: rbuild FAILED: {' | '.join(err_text(e))}", flush=True)
                    continue
                diffs = compare(a, c, vol)
                r.update(status="identical" if not diffs else "different", volatile=sorted(vol), diffs=diffs,
                         seconds=round(time.time() - t0, 1))
                results.append(r)
                print(f"[{name}] {case}: {r['status']}" + "".join(f"\n    {d}" for d in diffs[:20]), flush=True)
        built = [r for r in results if r["status"] != "buildkit-failed"]
        same = [r for r in built if r["status"] == "identical"]
        # The same figure with the lab 0.8's own differences set aside (rbuild follows current
        # BuildKit there).
        for r in built:
            r["explained"] = [[d, *classify(d)] for d in r.get("diffs", []) if classify(d)[0]]
        as_current = [r for r in built if r["status"] == "identical" or
                      (r["status"] == "different" and all(classify(d)[0] for d in r["diffs"]))]
        with open(os.path.join(HERE, "results", f"{name}.json"), "w") as f:
            json.dump({"corpus": name, "identical": len(same), "built_by_buildkit": len(built),
                       "identical_but_lab_0_8": len(as_current), "cases": results}, f, indent=1)
        summary.append(f"{name}: {len(same)}/{len(built)} identical, {len(as_current)}/{len(built)} once the "
                       f"lab 0.8's own differences are set aside ({len(results)} cases, "
                       f"{len(results) - len(built)} BuildKit does not build)")
    print("\n".join(summary))


def cmd_summary(argv):
    """Recomputes the figures of results/<corpus>.json files (after KNOWN changed)."""
    for path in argv:
        with open(path) as f:
            d = json.load(f)
        built = [r for r in d["cases"] if r["status"] != "buildkit-failed"]
        counts = {}
        for label, kinds in (("identical", set()), ("once the lab 0.8's own differences are set aside", {"lab-0.8"})):
            counts[label] = sum(1 for r in built if r["status"] == "identical" or (
                r["status"] == "different" and all(classify(x)[0] in kinds for x in r["diffs"])))
        print(f"{d['corpus']}: " + "; ".join(f"{k} {v}/{len(built)}" for k, v in counts.items()) +
              f" ({len(d['cases'])} cases)")


def cmd_record(argv):
    for case in argv:
        case = os.path.abspath(case)
        ctx, df, args = parse_case(case)
        with tempfile.TemporaryDirectory(prefix="differential-") as tmp:
            a = buildkit_listing(ctx, df, args, "differential-record", tmp)
            b = buildkit_listing(ctx, df, args, "differential-record", tmp)
        vol = volatile_keys(a, b)
        lines = {k: (VOLATILE if k in vol else v) for k, v in a.items()}
        for k in vol - set(a):
            lines[k] = VOLATILE
        ver = sh([DOCKER, "-H", "unix:///tmp/lab/docker.sock", "version", "--format", "{{.Server.Version}}"]).stdout.strip()
        write_listing(os.path.join(case, "expected.txt"), lines, [
            f"BuildKit's image of this case (dockerd {ver}, two --no-cache builds; {VOLATILE}: differed between them).",
            "Recorded with: bench/differential/differential.py record " + os.path.relpath(case, os.getcwd()),
        ])
        print(f"recorded {case}/expected.txt ({len(lines)} lines, {len(vol)} volatile)")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, argv = sys.argv[1], sys.argv[2:]
    if cmd == "run":
        cmd_run(argv)
    elif cmd == "record":
        cmd_record(argv)
    elif cmd == "summary":
        cmd_summary(argv)
    elif cmd == "list" and len(argv) == 1:
        for k, v in sorted(listing(f"oci:{argv[0]}").items()):
            print(f"{k}\t{v}")
    elif cmd == "check" and len(argv) == 2:
        diffs = compare(expected_listing(argv[0]), listing(f"oci:{argv[1]}"), set())
        print("\n".join(diffs))
        sys.exit(1 if diffs else 0)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
