//! Attestations end to end (issue #21): SBOM and SLSA provenance of a Debian-based image checked by
//! independent tools (dpkg-query inside the image, SPDX's pyspdxtools, a JSON Schema validator,
//! securesystemslib's DSSE verifier), secrets kept out, reproducible bytes, and both ways of attaching
//! them pushed to the real registry and read back by skopeo.
//!
//! The Python checkers live in the venv scripts/install-deps.sh makes (/opt/rbuild-pytools).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::common::{assert_not_in_store, expect_success, require, sh, Env, Registry, RBUILD};

const PYTOOLS: &str = "/opt/rbuild-pytools/bin";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> String {
    let py = format!("{PYTOOLS}/python");
    assert!(
        Path::new(&py).exists() && Path::new(&format!("{PYTOOLS}/pyspdxtools")).exists(),
        "{PYTOOLS} is missing: run scripts/install-deps.sh (it pip-installs spdx-tools, jsonschema, securesystemslib)"
    );
    py
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Serves one file over HTTP/1.0 on a free loopback port (for `ADD --checksum URL`); returns its URL.
fn serve_once_per_request(body: &'static str) -> String {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/tool.txt", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let resp = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes());
        }
    });
    url
}

/// An ECDSA P-256 key pair made by openssl: (private PKCS#8 PEM, public PEM).
fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    require("/usr/bin/openssl", "openssl");
    let key = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub"));
    sh(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&key));
    sh(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public));
    (key, public)
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                todo.push(e.path());
            } else if ft.is_file() {
                let bytes = std::fs::read(e.path()).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    out.push(e.path());
                }
            }
        }
    }
    out
}

#[test]
fn sbom_and_provenance_of_a_debian_image_pass_independent_checks_and_keep_secrets_out() {
    require("/usr/sbin/debootstrap", "debootstrap");
    let py = python();
    let env = Env::new();
    // The Debian base from debootstrap (tarball cached per machine), as tests/it/node.rs makes it.
    let out = Command::new(repo().join("scripts/make-debian.sh"))
        .arg("debian:bookworm")
        .env("RBUILD", RBUILD)
        .env("RBUILD_ROOT", env.root())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    expect_success(&out, &["scripts/make-debian.sh"]);

    let url = serve_once_per_request("tool v1\n");
    let sum = sh(Command::new("sh").args(["-c", "printf 'tool v1\\n' | sha256sum"]));
    let real = format!("sha256:{}", sum.split_whitespace().next().unwrap());
    let lock =
        std::fs::read_to_string(repo().join("examples/node-express/package-lock.json")).unwrap();
    let ctx = env.context(
        "app",
        &[
            (
                "Dockerfile",
                &format!(
                    "FROM debian:bookworm\nARG API_TOKEN\nARG DB_PASSWORD\nCOPY package-lock.json greeter.jar /app/\n\
                     COPY hello /usr/local/bin/hello\n\
                     ADD --checksum={real} {url} /opt/tool.txt\n\
                     RUN --mount=type=secret,id=npmrc test -s /run/secrets/npmrc && echo built > /built\n"
                ),
            ),
            ("package-lock.json", &lock),
        ],
    );
    // A jar with Maven coordinates, written by Python's zipfile (another zip writer than the unit tests').
    sh(Command::new(&py).args([
        "-c",
        "import sys,zipfile\n\
         with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n\
         \x20   z.writestr('META-INF/MANIFEST.MF', 'Manifest-Version: 1.0\\r\\n')\n\
         \x20   z.writestr('META-INF/maven/org.example/greeter/pom.properties', 'groupId=org.example\\nartifactId=greeter\\nversion=3.2.1\\n')\n",
    ]).arg(ctx.join("greeter.jar")));
    // A Rust binary as `cargo auditable build` leaves it: a real linker's ELF file (the host's
    // /bin/true) with the `.dep-v0` section — auditable-serde's JSON, zlib-compressed by Python's zlib —
    // added by binutils' objcopy (building cargo-auditable itself would cost CI minutes).
    let dep = env.dir.path().join("dep-v0");
    sh(Command::new(&py).args([
        "-c",
        "import sys,zlib\n\
         open(sys.argv[1],'wb').write(zlib.compress(b'{\"packages\":[\
         {\"name\":\"hello\",\"version\":\"0.1.0\",\"source\":\"local\",\"dependencies\":[1,2],\"root\":true},\
         {\"name\":\"itoa\",\"version\":\"1.0.11\",\"source\":\"crates.io\"},\
         {\"name\":\"cc\",\"version\":\"1.0.90\",\"source\":\"crates.io\",\"kind\":\"build\"}]}'))\n",
    ]).arg(&dep));
    sh(Command::new("objcopy")
        .arg("--add-section")
        .arg(format!(".dep-v0={}", dep.display()))
        .arg("/bin/true")
        .arg(ctx.join("hello")));
    let secret_file = env.dir.path().join("npmrc");
    std::fs::write(
        &secret_file,
        "//registry.npmjs.org/:_authToken=npm-secret-value-4711\n",
    )
    .unwrap();
    let (key, public) = keypair(env.dir.path(), "signer");
    let (_, other_public) = keypair(env.dir.path(), "other");
    let secret_arg = format!("id=npmrc,src={}", secret_file.display());
    let build = |dest: &Path, extra: &[&str]| {
        let d = format!("type=local,dest={}", dest.display());
        let mut args = vec![
            "--sbom",
            "--provenance=mode=max",
            "--sign-key",
            key.to_str().unwrap(),
            "--secret",
            &secret_arg,
            "--build-arg",
            "API_TOKEN=tok-secret-value-1234",
            "--build-arg",
            "DB_PASSWORD=pw-secret-value-5678",
            "-o",
            &d,
        ];
        args.extend_from_slice(extra);
        env.build_plain("app:1", &ctx, &args)
    };
    let out1 = env.dir.path().join("out1");
    let (_, progress) = build(&out1, &[]);
    assert!(
        progress.contains("attested: provenance, sbom (signed)"),
        "{progress}"
    );

    // SBOM: every package dpkg-query lists inside the image, same names and versions, same count.
    let sbom = read_json(&out1.join("sbom.spdx.json"));
    assert_eq!(sbom["predicateType"], "https://spdx.dev/Document");
    let doc = &sbom["predicate"];
    let purls = |prefix: &str| -> BTreeSet<(String, String)> {
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| {
                p["externalRefs"][0]["referenceLocator"]
                    .as_str()
                    .is_some_and(|l| l.starts_with(prefix))
            })
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["versionInfo"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let listed = env.run_sh(
        "app:1",
        "dpkg-query -W -f '${db:Status-Status} ${Package} ${Version}\\n'",
    );
    let dpkg: BTreeSet<(String, String)> = listed
        .lines()
        .filter_map(|l| l.strip_prefix("installed "))
        .map(|l| {
            let (n, v) = l.split_once(' ').unwrap();
            (n.to_owned(), v.to_owned())
        })
        .collect();
    assert!(
        dpkg.len() > 50,
        "debootstrap minbase has ~90 packages: {listed}"
    );
    assert_eq!(purls("pkg:deb/debian/"), dpkg);
    let licence = |name: &str| {
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in the SBOM"))["licenseDeclared"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // From machine-readable (DEP-5) copyright files; glibc's is free-form, so no guess for libc6.
    assert_eq!(licence("grep"), "GPL-3.0-or-later");
    assert_eq!(licence("adduser"), "GPL-2.0-or-later");
    assert_eq!(licence("libc6"), "NOASSERTION");
    // npm: every package of the example's lock file with its locked version.
    let lock: Value = serde_json::from_str(&lock).unwrap();
    let locked: BTreeSet<(String, String)> = lock["packages"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| {
            (
                k.rsplit_once("node_modules/").unwrap().1.to_owned(),
                v["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(locked.len() > 30, "express has dozens of dependencies");
    assert_eq!(purls("pkg:npm/"), locked);
    assert_eq!(
        purls("pkg:maven/"),
        BTreeSet::from([("org.example:greeter".to_owned(), "3.2.1".to_owned())])
    );

    // Rust: the runtime crates of the `.dep-v0` section (not the build-only one), the root's
    // dependency, and the binary listed with the hashes coreutils computes, contained by the root.
    assert_eq!(
        purls("pkg:cargo/"),
        BTreeSet::from([
            ("hello".to_owned(), "0.1.0".to_owned()),
            ("itoa".to_owned(), "1.0.11".to_owned())
        ])
    );
    let id_of = |purl: &str| {
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["externalRefs"][0]["referenceLocator"] == purl)
            .unwrap_or_else(|| panic!("no {purl}"))["SPDXID"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let related = |from: &str, kind: &str, to: &str| {
        doc["relationships"].as_array().unwrap().iter().any(|r| {
            r["spdxElementId"] == from
                && r["relationshipType"] == kind
                && r["relatedSpdxElement"] == to
        })
    };
    let (hello, itoa) = (
        id_of("pkg:cargo/hello@0.1.0"),
        id_of("pkg:cargo/itoa@1.0.11"),
    );
    assert!(related(&hello, "DEPENDS_ON", &itoa));
    let sum = |tool: &str, file: &Path| {
        sh(Command::new(tool).arg(file))
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let files = doc["files"].as_array().expect("hashed files are listed");
    for (name, host, owner) in [
        ("./usr/local/bin/hello", ctx.join("hello"), &hello),
        (
            "./app/greeter.jar",
            ctx.join("greeter.jar"),
            &id_of("pkg:maven/org.example/greeter@3.2.1"),
        ),
    ] {
        let f = files
            .iter()
            .find(|f| f["fileName"] == name)
            .unwrap_or_else(|| panic!("{name} not in {files:?}"));
        let checksum = |alg: &str| {
            f["checksums"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["algorithm"] == alg)
                .map(|c| c["checksumValue"].as_str().unwrap().to_owned())
        };
        assert_eq!(checksum("SHA1"), Some(sum("sha1sum", &host)), "{name}");
        assert_eq!(checksum("SHA256"), Some(sum("sha256sum", &host)), "{name}");
        assert!(
            related(owner, "CONTAINS", f["SPDXID"].as_str().unwrap()),
            "{name}"
        );
    }

    // SPDX's own validator accepts the document.
    let spdx = env.dir.path().join("sbom-doc.json");
    std::fs::write(&spdx, serde_json::to_vec(doc).unwrap()).unwrap();
    sh(Command::new(format!("{PYTOOLS}/pyspdxtools"))
        .arg("-i")
        .arg(&spdx));

    // Provenance: the SLSA v1 schema, the base image by digest, the ADD URL with its checksum.
    let prov = out1.join("provenance.json");
    let schema = repo().join("tests/fixtures/slsa/provenance-v1.schema.json");
    sh(Command::new(&py).args([
        "-c",
        "import json,sys,jsonschema; s=json.load(open(sys.argv[1])); \
         jsonschema.Draft202012Validator(s, format_checker=jsonschema.FormatChecker()).validate(json.load(open(sys.argv[2])))",
    ]).arg(&schema).arg(&prov));
    let p = read_json(&prov);
    let (inspect, _) = env.ok(&["inspect", "debian:bookworm"]);
    let base: Value = serde_json::from_str(&inspect).unwrap();
    let base_hex = base["Descriptor"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let deps = p["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    assert!(
        deps.iter().any(|d| d["digest"]["sha256"] == base_hex
            && d["uri"]
                .as_str()
                .unwrap()
                .starts_with("pkg:docker/docker.io/library/debian@bookworm")),
        "{deps:?}"
    );
    assert!(
        deps.iter().any(|d| d["uri"] == url.as_str()
            && d["digest"]["sha256"] == real.trim_start_matches("sha256:")),
        "{deps:?}"
    );
    let (image_inspect, _) = env.ok(&["inspect", "app:1"]);
    let image: Value = serde_json::from_str(&image_inspect).unwrap();
    let image_hex = image["Descriptor"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    assert_eq!(p["subject"][0]["digest"]["sha256"], image_hex.as_str());
    let steps = p["predicate"]["buildDefinition"]["internalParameters"]["steps"]
        .as_array()
        .unwrap();
    assert!(
        steps.iter().all(|s| s["cacheKey"].is_string()),
        "max mode: {steps:?}"
    );
    // The context's file-tree digest: docs/ATTESTATIONS.md's coreutils recipe over the context gives it.
    let tree = sh(Command::new("sh").current_dir(&ctx).args([
        "-c",
        "find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum",
    ]));
    assert_eq!(
        p["predicate"]["buildDefinition"]["internalParameters"]["context"]["digest"]["sha256"],
        tree.split_whitespace().next().unwrap(),
    );

    // Signed: securesystemslib (an independent DSSE implementation) and `rbuild verify`.
    for f in ["provenance.dsse.json", "sbom.spdx.dsse.json"] {
        sh(Command::new(&py)
            .args([
                "-c",
                "import json,sys\n\
                 from cryptography.hazmat.primitives.serialization import load_pem_public_key\n\
                 from securesystemslib.dsse import Envelope\n\
                 from securesystemslib.signer import SSlibKey\n\
                 raw=open(sys.argv[1]).read()\n\
                 key=SSlibKey.from_crypto(load_pem_public_key(open(sys.argv[2],'rb').read()), keyid=json.loads(raw)['signatures'][0]['keyid'])\n\
                 assert len(Envelope.from_dict(json.loads(raw)).verify([key], 1)) == 1\n",
            ])
            .arg(out1.join(f))
            .arg(&public));
    }
    let (verified, _) = env.ok(&["verify", "--key", public.to_str().unwrap(), "app:1"]);
    assert!(
        verified.contains("verified https://slsa.dev/provenance/v1 for app:1@sha256:"),
        "{verified}"
    );
    assert!(
        verified.contains("verified https://spdx.dev/Document"),
        "{verified}"
    );
    let refused = env.fails(&["verify", "--key", other_public.to_str().unwrap(), "app:1"]);
    assert!(
        refused.contains("no signature of the ecdsa-p256 key"),
        "{refused}"
    );
    let (shown, _) = env.ok(&["inspect", "--sbom", "app:1"]);
    assert_eq!(serde_json::from_str::<Value>(&shown).unwrap(), *doc);

    // No secret in any attestation: the files beside the tree, the stored (signed) blobs as `inspect`
    // shows them; and the --secret value nowhere in the store (every blob, layers decompressed).
    let mut attestations = String::new();
    for f in [
        "provenance.json",
        "sbom.spdx.json",
        "provenance.dsse.json",
        "sbom.spdx.dsse.json",
    ] {
        attestations.push_str(&std::fs::read_to_string(out1.join(f)).unwrap());
    }
    for flag in ["--provenance", "--sbom"] {
        attestations.push_str(&env.ok(&["inspect", flag, "app:1"]).0);
    }
    for s in [
        "npm-secret-value-4711",
        "tok-secret-value-1234",
        "pw-secret-value-5678",
    ] {
        assert!(!attestations.contains(s), "{s} leaked into an attestation");
    }
    assert_not_in_store(&env.root(), "npm-secret-value-4711");
    assert_eq!(
        p["predicate"]["buildDefinition"]["externalParameters"]["args"]["build-arg:API_TOKEN"],
        "[redacted]"
    );

    // CycloneDX (`format=cyclonedx`, as an `--attest` after `--sbom`: the later one wins): the same
    // packages with the same purls, the binary's hashes, accepted by CycloneDX's own strict validator.
    let cdx_out = env.dir.path().join("cdx");
    build(&cdx_out, &["--attest", "type=sbom,format=cyclonedx"]);
    assert!(!cdx_out.join("sbom.spdx.json").exists());
    let cdx = read_json(&cdx_out.join("sbom.cdx.json"));
    assert_eq!(cdx["predicateType"], "https://cyclonedx.org/bom");
    assert_eq!(cdx["subject"][0]["digest"]["sha256"], image_hex.as_str());
    let bom = &cdx["predicate"];
    let cdx_purls: BTreeSet<&str> = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["purl"].as_str())
        .collect();
    let spdx_purls: BTreeSet<&str> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["externalRefs"][0]["referenceLocator"].as_str())
        .collect();
    assert_eq!(cdx_purls, spdx_purls);
    let hello_bin = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["purl"] == "pkg:cargo/hello@0.1.0")
        .unwrap();
    assert_eq!(
        hello_bin["hashes"][1],
        serde_json::json!({"alg": "SHA-256", "content": sum("sha256sum", &ctx.join("hello"))})
    );
    let bom_file = env.dir.path().join("bom.json");
    std::fs::write(&bom_file, serde_json::to_vec(bom).unwrap()).unwrap();
    sh(Command::new(&py)
        .args([
            "-c",
            "import sys\n\
             from cyclonedx.schema import SchemaVersion\n\
             from cyclonedx.validation.json import JsonStrictValidator\n\
             err = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())\n\
             sys.exit(str(err)[:3000] if err else 0)\n",
        ])
        .arg(&bom_file));
    let (shown, _) = env.ok(&["inspect", "--sbom", "app:1"]);
    assert_eq!(serde_json::from_str::<Value>(&shown).unwrap(), *bom);
    let (verified, _) = env.ok(&["verify", "--key", public.to_str().unwrap(), "app:1"]);
    assert!(
        verified.contains("verified https://cyclonedx.org/bom"),
        "{verified}"
    );

    // Reproducible: with SOURCE_DATE_EPOCH, two cold builds give byte-identical attestations.
    let (a, b) = (env.dir.path().join("r1"), env.dir.path().join("r2"));
    for dest in [&a, &b] {
        build(
            dest,
            &["--no-cache", "--build-arg", "SOURCE_DATE_EPOCH=1700000000"],
        );
    }
    for f in [
        "provenance.json",
        "sbom.spdx.json",
        "provenance.dsse.json",
        "sbom.spdx.dsse.json",
    ] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs"
        );
    }
    assert_eq!(
        read_json(&a.join("provenance.json"))["predicate"]["runDetails"]["metadata"]["finishedOn"],
        "2023-11-14T22:13:20Z"
    );
}

/// `rbuild` with a Docker config holding the registry's credentials.
fn rbuild_with(env: &Env, docker_config: &Path, args: &[&str]) -> Output {
    Command::new(RBUILD)
        .arg("--root")
        .arg(env.root())
        .args(args)
        .env("NO_COLOR", "1")
        .env("DOCKER_CONFIG", docker_config)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn skopeo_raw(reference: &str, creds: &str) -> Value {
    let out = sh(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        creds,
        &format!("docker://{reference}"),
    ]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{reference}: {e}: {out}"))
}

#[test]
fn attestations_attach_as_oci_referrers_or_in_buildkit_index_layout() {
    require("/usr/bin/skopeo", "skopeo");
    let password = "registry-pass-9c1f";
    let reg = Registry::start_htpasswd("alice", password);
    let creds = format!("alice:{password}");
    let env = Env::new();
    env.busybox();
    let cfg = env.dir.path().join("docker");
    std::fs::create_dir_all(&cfg).unwrap();
    let auth = sh(Command::new("sh").args(["-c", "printf %s \"$0\" | base64 -w0", &creds]));
    std::fs::write(
        cfg.join("config.json"),
        format!("{{\"auths\":{{\"{}\":{{\"auth\":\"{auth}\"}}}}}}", reg.addr),
    )
    .unwrap();
    let ctx = env.context(
        "app",
        &[("Dockerfile", "FROM busybox:local\nRUN echo hi > /hi\n")],
    );
    let push = |tag: &str, mode: &str| {
        let image = format!("{}/att/app:{tag}", reg.addr);
        let args = [
            "build",
            "--sbom",
            "--provenance",
            "--attest-mode",
            mode,
            "--push",
            "-t",
            &image,
            ctx.to_str().unwrap(),
        ];
        let (stdout, _) = expect_success(&rbuild_with(&env, &cfg, &args), &args);
        let pushed = stdout
            .lines()
            .last()
            .unwrap()
            .rsplit_once('@')
            .unwrap()
            .1
            .to_owned();
        (image, pushed)
    };

    // Referrers: the tag names the image alone; the referrers tag `sha256-<hex>` lists an artifact
    // manifest whose subject is the image (this registry has no referrers API: the tag schema).
    let (image, digest) = push("ref", "referrers");
    let raw = skopeo_raw(&image, &creds);
    assert!(
        raw["layers"].is_array() && raw.get("manifests").is_none(),
        "{raw}"
    );
    let (local, _) = env.ok(&["inspect", &image]);
    let local: Value = serde_json::from_str(&local).unwrap();
    assert_eq!(local["Descriptor"]["digest"], digest.as_str());
    let referrers = skopeo_raw(
        &format!("{}/att/app:{}", reg.addr, digest.replacen(':', "-", 1)),
        &creds,
    );
    let entry = &referrers["manifests"][0];
    assert_eq!(
        entry["artifactType"], "application/vnd.in-toto+json",
        "{referrers}"
    );
    let artifact = skopeo_raw(
        &format!("{}/att/app@{}", reg.addr, entry["digest"].as_str().unwrap()),
        &creds,
    );
    assert_eq!(artifact["subject"]["digest"], digest.as_str());
    let types: BTreeSet<&str> = artifact["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["annotations"]["in-toto.io/predicate-type"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        types,
        BTreeSet::from([
            "https://slsa.dev/provenance/v1",
            "https://spdx.dev/Document"
        ])
    );

    // `rbuild push` of that image under another name takes its stored attestations along.
    let copy = format!("{}/att/copy:1", reg.addr);
    let args = ["push", image.as_str(), copy.as_str()];
    expect_success(&rbuild_with(&env, &cfg, &args), &args);
    let copied = skopeo_raw(
        &format!("{}/att/copy:{}", reg.addr, digest.replacen(':', "-", 1)),
        &creds,
    );
    assert_eq!(
        copied["manifests"][0]["digest"], entry["digest"],
        "{copied}"
    );

    // BuildKit's layout: an index with the image (its platform) and an unknown/unknown attestation
    // manifest pointing at it.
    let (image, index_digest) = push("idx", "index");
    let index = skopeo_raw(&image, &creds);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{index}");
    assert_eq!(manifests[0]["platform"]["os"], "linux");
    let image_digest = manifests[0]["digest"].as_str().unwrap();
    assert_eq!(manifests[1]["platform"]["os"], "unknown");
    assert_eq!(
        manifests[1]["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        manifests[1]["annotations"]["vnd.docker.reference.digest"],
        image_digest
    );
    assert_ne!(index_digest, image_digest);

    // A pull by platform selects the real image, not the attestation manifest.
    let pulled = env.dir.path().join("pulled");
    let (_, _) = expect_success(
        &rbuild_with(&env, &cfg, &["pull", "--platform", "linux/amd64", &image]),
        &["pull"],
    );
    let (shown, _) = env.ok(&["inspect", &image]);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["Descriptor"]["digest"], image_digest);

    // `skopeo copy --all` takes the image and its attestations along.
    let layout = format!("oci:{}:app", pulled.display());
    sh(Command::new("skopeo").args([
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &format!("docker://{image}"),
        &layout,
    ]));
    let attestation = read_json(
        &pulled.join("blobs/sha256").join(
            manifests[1]["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:"),
        ),
    );
    for l in attestation["layers"].as_array().unwrap() {
        let blob = pulled
            .join("blobs/sha256")
            .join(l["digest"].as_str().unwrap().trim_start_matches("sha256:"));
        assert!(
            blob.exists(),
            "attestation layer copied: {}",
            blob.display()
        );
    }

    // Several platforms (no RUN, no base: no emulation needed): one attestation set per platform image.
    let multi = env.context(
        "multi",
        &[
            ("Dockerfile", "FROM scratch\nCOPY hi /hi\n"),
            ("hi", "hi\n"),
        ],
    );
    let push_multi = |tag: &str, mode: &str| {
        let image = format!("{}/att/multi:{tag}", reg.addr);
        let args = [
            "build",
            "--platform",
            "linux/amd64,linux/arm64",
            "--sbom",
            "--provenance",
            "--attest-mode",
            mode,
            "--push",
            "-t",
            &image,
            multi.to_str().unwrap(),
        ];
        let (stdout, _) = expect_success(&rbuild_with(&env, &cfg, &args), &args);
        let pushed = stdout
            .lines()
            .last()
            .unwrap()
            .rsplit_once('@')
            .unwrap()
            .1
            .to_owned();
        (image, pushed)
    };
    // Index mode (BuildKit's layout): the platform entries, then one unknown/unknown attestation manifest
    // per platform image, pointing at it.
    let (image, pushed) = push_multi("idx", "index");
    let index = skopeo_raw(&image, &creds);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 4, "{index}");
    assert_eq!(pushed, format!("sha256:{}", sh(Command::new("sh").args(["-c",
        &format!("skopeo inspect --raw --tls-verify=false --creds {creds} docker://{image} | sha256sum | cut -d' ' -f1")])).trim()));
    let arch: Vec<&str> = manifests
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(arch, ["amd64", "arm64", "unknown", "unknown"], "{index}");
    for k in 0..2 {
        let a = &manifests[k + 2]["annotations"];
        assert_eq!(a["vnd.docker.reference.type"], "attestation-manifest");
        assert_eq!(
            a["vnd.docker.reference.digest"], manifests[k]["digest"],
            "{index}"
        );
        let att = skopeo_raw(
            &format!(
                "{}/att/multi@{}",
                reg.addr,
                manifests[k + 2]["digest"].as_str().unwrap()
            ),
            &creds,
        );
        assert_eq!(att["layers"].as_array().unwrap().len(), 2, "{att}");
    }
    // A pull by platform still picks the real image.
    let args = ["pull", "--platform", "linux/arm64", &image];
    expect_success(&rbuild_with(&env, &cfg, &args), &args);
    let (shown, _) = env.ok(&["inspect", &image]);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["Descriptor"]["digest"], manifests[1]["digest"]);
    // Referrers mode: the tag names the plain index; each platform image has its own referrers.
    let (image, pushed) = push_multi("ref", "referrers");
    let index = skopeo_raw(&image, &creds);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{index}");
    assert!(!pushed.is_empty());
    for m in manifests {
        let d = m["digest"].as_str().unwrap();
        let refs = skopeo_raw(
            &format!("{}/att/multi:{}", reg.addr, d.replacen(':', "-", 1)),
            &creds,
        );
        let artifact = skopeo_raw(
            &format!(
                "{}/att/multi@{}",
                reg.addr,
                refs["manifests"][0]["digest"].as_str().unwrap()
            ),
            &creds,
        );
        assert_eq!(artifact["subject"]["digest"], d, "{artifact}");
    }

    // The registry password is in no attestation (nor anywhere in the store).
    assert_not_in_store(&env.root(), password);
    assert_eq!(files_containing(&pulled, password), Vec::<PathBuf>::new());
}

/// The blob `digest` (`sha256:…`) of the OCI layout directory `dir`, parsed as JSON.
fn layout_json(dir: &Path, digest: &str) -> Value {
    read_json(
        &dir.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
}

/// `skopeo inspect [EXTRA…] REFERENCE` as JSON.
fn skopeo_inspect(extra: &[&str], reference: &str) -> Value {
    let mut cmd = Command::new("skopeo");
    cmd.arg("inspect").args(extra).arg(reference);
    let out = sh(&mut cmd);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{reference}: {e}: {out}"))
}

/// Checks BuildKit's attestation entries of an image index (after its `images` platform entries): one
/// `unknown/unknown` manifest per image, annotated with the image's digest, whose layers in the layout
/// `dir` are in-toto statements (provenance and SPDX) about that image.
fn check_attestation_entries(index: &Value, images: usize, dir: &Path) {
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2 * images, "{index}");
    for k in 0..images {
        let image = &manifests[k];
        let att = &manifests[images + k];
        assert_ne!(image["platform"]["os"], "unknown", "{index}");
        assert_eq!(att["platform"]["os"], "unknown", "{index}");
        assert_eq!(att["platform"]["architecture"], "unknown", "{index}");
        let a = &att["annotations"];
        assert_eq!(a["vnd.docker.reference.type"], "attestation-manifest");
        assert_eq!(a["vnd.docker.reference.digest"], image["digest"], "{index}");
        let m = layout_json(dir, att["digest"].as_str().unwrap());
        let mut types = BTreeSet::new();
        for l in m["layers"].as_array().unwrap() {
            assert_eq!(l["mediaType"], "application/vnd.in-toto+json");
            let st = layout_json(dir, l["digest"].as_str().unwrap());
            assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
            assert_eq!(
                format!(
                    "sha256:{}",
                    st["subject"][0]["digest"]["sha256"].as_str().unwrap()
                ),
                image["digest"].as_str().unwrap()
            );
            assert_eq!(
                st["predicateType"],
                l["annotations"]["in-toto.io/predicate-type"]
            );
            types.insert(st["predicateType"].as_str().unwrap().to_owned());
        }
        assert_eq!(
            types,
            BTreeSet::from([
                "https://slsa.dev/provenance/v1".to_owned(),
                "https://spdx.dev/Document".to_owned()
            ])
        );
        // Its config is BuildKit's: an unknown/unknown image whose diff_ids are the statements.
        let config = layout_json(dir, m["config"]["digest"].as_str().unwrap());
        assert_eq!(config["os"], "unknown");
        assert_eq!(config["rootfs"]["diff_ids"][0], m["layers"][0]["digest"]);
    }
}

/// Followed: moby/buildkit exporter/oci/export.go and exporter/containerimage/writer.go (master,
/// 2026-08): an image with attestations is committed as an image index (even for one platform) holding
/// the platform manifest(s) and, after them, one `unknown/unknown` attestation manifest per image; the
/// OCI variant writes all of it; the docker variant (single platform only) writes the same index (its
/// archive exporter then writes no manifest.json — rbuild keeps manifest.json so that `docker load` of
/// a classic store still reads the image).
#[test]
fn oci_and_docker_archives_carry_attestations_as_buildkits_oci_exporter_does() {
    require("/usr/bin/skopeo", "skopeo");
    require("/usr/bin/umoci", "umoci");
    let reg = Registry::start();
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "app",
        &[("Dockerfile", "FROM busybox:local\nRUN echo hi > /hi\n")],
    );
    let d = env.dir.path();
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let (tar, dir, docker) = (d.join("app.tar"), d.join("layout"), d.join("docker.tar"));
    env.build_plain(
        "app:1",
        &ctx,
        &[
            "--sbom",
            "--provenance",
            "-o",
            &format!("type=oci,dest={}", s(&tar)),
            "-o",
            &format!("type=oci,dest={},tar=false", s(&dir)),
            "-o",
            &format!("type=docker,dest={}", s(&docker)),
        ],
    );
    let (shown, _) = env.ok(&["inspect", "app:1"]);
    let image: Value = serde_json::from_str(&shown).unwrap();
    let image_digest = image["Descriptor"]["digest"].as_str().unwrap().to_owned();

    // The directory: index.json names an index of the image (with its platform) and its attestations.
    let top = read_json(&dir.join("index.json"));
    assert_eq!(top["manifests"].as_array().unwrap().len(), 1, "{top}");
    assert_eq!(
        top["manifests"][0]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let index = layout_json(&dir, top["manifests"][0]["digest"].as_str().unwrap());
    assert_eq!(index["manifests"][0]["digest"], image_digest.as_str());
    assert_eq!(index["manifests"][0]["platform"]["os"], "linux");
    check_attestation_entries(&index, 1, &dir);
    // umoci (0.4) takes every manifest under an index as a candidate ("tag is ambiguous"), with
    // BuildKit's layout as with any multi-platform one; skopeo picks the platform image, umoci unpacks it.
    let picked_dir = d.join("picked");
    sh(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:app:1", s(&dir)),
        &format!("oci:{}:app", s(&picked_dir)),
    ]));
    let bundle = d.join("bundle");
    sh(Command::new("umoci").args([
        "unpack",
        "--image",
        &format!("{}:app", s(&picked_dir)),
        &s(&bundle),
    ]));
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/hi")).unwrap(),
        "hi\n"
    );

    // The archive: skopeo reads the index raw, and picks the real image by platform.
    let archive = format!("oci-archive:{}", s(&tar));
    let raw = skopeo_inspect(&["--raw"], &archive);
    assert_eq!(
        raw, index,
        "the archive holds the same index as the directory"
    );
    let picked = skopeo_inspect(&["--override-arch", "amd64"], &archive);
    assert_eq!(picked["Architecture"], "amd64", "{picked}");
    assert_eq!(
        picked["Layers"],
        image["Manifest"]["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].clone())
            .collect::<Value>()
    );
    // Copied to a registry with every manifest: the registry serves BuildKit's layout, and a pull by
    // platform selects the real image.
    let remote = format!("{}/oci/app:1", reg.addr);
    sh(Command::new("skopeo").args([
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &archive,
        &format!("docker://{remote}"),
    ]));
    let served = skopeo_inspect(
        &["--raw", "--tls-verify=false"],
        &format!("docker://{remote}"),
    );
    assert_eq!(served, index);
    let fresh = Env::new();
    fresh.ok(&["pull", "--platform", "linux/amd64", &remote]);
    let (shown, _) = fresh.ok(&["inspect", &remote]);
    let pulled: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(pulled["Descriptor"]["digest"], image_digest.as_str());

    // The docker archive: the same index in index.json, and manifest.json for `docker load`.
    let listing = sh(Command::new("tar").arg("-tf").arg(&docker));
    assert!(listing.lines().any(|l| l == "manifest.json"), "{listing}");
    let by_docker = skopeo_inspect(&[], &format!("docker-archive:{}", s(&docker)));
    // (skopeo names a docker archive's layers by diff_id.)
    assert_eq!(
        by_docker["Layers"].as_array().unwrap().len(),
        picked["Layers"].as_array().unwrap().len(),
        "{by_docker}"
    );
    assert_eq!(by_docker["Architecture"], "amd64");
    let (loaded, _) = fresh.ok(&["load", "-i", &s(&docker)]);
    assert!(loaded.contains("app:1"), "{loaded}");
    assert_eq!(fresh.run_sh("app:1", "cat /hi"), "hi\n");

    // Without attestations the layout names the image manifest itself, as before.
    let plain = d.join("plain");
    env.build_plain(
        "app:1",
        &ctx,
        &["-o", &format!("type=oci,dest={},tar=false", s(&plain))],
    );
    let top = read_json(&plain.join("index.json"));
    assert_eq!(
        top["manifests"][0]["digest"],
        image_digest.as_str(),
        "{top}"
    );
    assert_eq!(
        std::fs::read_dir(plain.join("blobs/sha256"))
            .unwrap()
            .count(),
        2 + picked["Layers"].as_array().unwrap().len(),
        "manifest, config and the layers, nothing else"
    );

    // Two platforms (FROM scratch: no emulation): the platform entries, then one attestation manifest
    // per platform image; skopeo picks each platform's image.
    let multi = env.context(
        "multi",
        &[
            ("Dockerfile", "FROM scratch\nCOPY hi /hi\n"),
            ("hi", "hi\n"),
        ],
    );
    let mdir = d.join("multi-layout");
    let mtar = d.join("multi.tar");
    env.build_plain(
        "multi:1",
        &multi,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--sbom",
            "--provenance",
            "-o",
            &format!("type=oci,dest={},tar=false", s(&mdir)),
            "-o",
            &format!("type=oci,dest={}", s(&mtar)),
        ],
    );
    let top = read_json(&mdir.join("index.json"));
    let index = layout_json(&mdir, top["manifests"][0]["digest"].as_str().unwrap());
    let arch: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(arch, ["amd64", "arm64", "unknown", "unknown"], "{index}");
    check_attestation_entries(&index, 2, &mdir);
    let archive = format!("oci-archive:{}", s(&mtar));
    assert_eq!(skopeo_inspect(&["--raw"], &archive), index);
    let arm = skopeo_inspect(&["--override-arch", "arm64"], &archive);
    assert_eq!(arm["Architecture"], "arm64", "{arm}");
    let arm_manifest = layout_json(&mdir, index["manifests"][1]["digest"].as_str().unwrap());
    assert_eq!(
        arm["Layers"][0], arm_manifest["layers"][0]["digest"],
        "{arm}"
    );
}

/// The `@sha256:…` digest an rbuild push printed last on stdout.
fn pushed_digest(stdout: &str) -> String {
    let last = stdout.lines().last().unwrap_or_default();
    last.rsplit_once('@')
        .unwrap_or_else(|| panic!("no digest in {stdout:?}"))
        .1
        .to_owned()
}

/// `rbuild verify` and `rbuild inspect --sbom|--provenance` of images that are only in a registry: the
/// referrers (tag schema: docker-registry 2.8 has no referrers API, which rbuild asks first) and
/// BuildKit's index layout, one and two platforms, a wrong key, an image without attestations.
#[test]
fn verify_and_inspect_read_attestations_from_a_registry_in_both_attachment_modes() {
    let reg = Registry::start();
    let env = Env::new();
    env.busybox();
    let (key, public) = keypair(env.dir.path(), "signer");
    let (_, other) = keypair(env.dir.path(), "other");
    let (key, public, other) = (
        key.to_str().unwrap().to_owned(),
        public.to_str().unwrap().to_owned(),
        other.to_str().unwrap().to_owned(),
    );
    let ctx = env.context(
        "app",
        &[("Dockerfile", "FROM busybox:local\nRUN echo hi > /hi\n")],
    );
    let multi = env.context(
        "multi",
        &[
            ("Dockerfile", "FROM scratch\nCOPY hi /hi\n"),
            ("hi", "hi\n"),
        ],
    );
    let push = |name: &str, ctx: &Path, extra: &[&str]| {
        let image = format!("{}/att/{name}", reg.addr);
        let mut args = vec!["--push"];
        args.extend_from_slice(extra);
        let (stdout, _) = env.build_plain(&image, ctx, &args);
        (image, pushed_digest(&stdout))
    };
    let signed = ["--sbom", "--provenance", "--sign-key", key.as_str()];
    let (by_ref, ref_digest) = push(
        "ref:1",
        &ctx,
        &[&signed[..], &["--attest-mode", "referrers"]].concat(),
    );
    let (by_idx, _) = push(
        "idx:1",
        &ctx,
        &[&signed[..], &["--attest-mode", "index"]].concat(),
    );
    let two = ["--platform", "linux/amd64,linux/arm64"];
    let (multi_idx, _) = push(
        "multi-idx:1",
        &multi,
        &[&signed[..], &two, &["--attest-mode", "index"]].concat(),
    );
    let (multi_ref, _) = push(
        "multi-ref:1",
        &multi,
        &[&signed[..], &two, &["--attest-mode", "referrers"]].concat(),
    );
    let (bare, _) = push("bare:1", &ctx, &[]);

    // A fresh store has none of them: verify reads the registry.
    let fresh = Env::new();
    let (out, _) = fresh.ok(&["verify", "--key", &public, &by_ref]);
    assert!(out.contains(&format!("for {by_ref}@{ref_digest}")), "{out}");
    assert!(out.contains("(referrers tag)"), "{out}");
    assert!(
        out.contains("verified https://slsa.dev/provenance/v1"),
        "{out}"
    );
    assert!(out.contains("verified https://spdx.dev/Document"), "{out}");
    // (docker-registry 2.8 answered the referrers API request 404: rbuild fell back to the tag.)
    let (out, _) = fresh.ok(&["verify", "--key", &public, &by_idx]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("(linux/amd64, image index)"), "{out}");
    for image in [&multi_idx, &multi_ref] {
        let (out, _) = fresh.ok(&["verify", "--key", &public, image]);
        assert_eq!(
            out.lines().count(),
            4,
            "two attestations per platform image: {out}"
        );
        assert!(
            out.contains("(linux/amd64, ") && out.contains("(linux/arm64, "),
            "{out}"
        );
        let (out, _) = fresh.ok(&[
            "verify",
            "--key",
            &public,
            "--platform",
            "linux/arm64",
            image,
        ]);
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(!out.contains("linux/amd64"), "{out}");
    }
    assert!(fresh
        .ok(&["verify", "--key", &public, &multi_idx])
        .0
        .contains("image index"));
    assert!(fresh
        .ok(&["verify", "--key", &public, &multi_ref])
        .0
        .contains("referrers tag"));
    assert_eq!(
        fresh.ok(&["images", "-q"]).0,
        "",
        "verify pulled nothing into the store"
    );
    // A pulled image keeps no attestations in the store: its registry is read.
    fresh.ok(&["pull", &by_idx]);
    let (out, _) = fresh.ok(&["verify", "--key", &public, &by_idx]);
    assert!(out.contains("(linux/amd64, image index)"), "{out}");

    // Another key fails, for either layout.
    for image in [&by_ref, &by_idx, &multi_idx] {
        let e = fresh.fails(&["verify", "--key", &other, image]);
        assert!(e.contains("signature verification failed"), "{e}");
    }
    // An image without attestations: a clear error naming where they were looked for.
    let e = fresh.fails(&["verify", "--key", &public, &bare]);
    assert!(e.contains("has no attestations in the registry"), "{e}");
    assert!(e.contains("referrers API") && e.contains("sha256-"), "{e}");
    let e = fresh.fails(&["inspect", "--sbom", &bare]);
    assert!(e.contains("has no attestations in the registry"), "{e}");
    let e = fresh.fails(&[
        "verify",
        "--key",
        &public,
        "--platform",
        "linux/s390x",
        &multi_idx,
    ]);
    assert!(
        e.contains("no image for linux/s390x") && e.contains("linux/arm64"),
        "{e}"
    );

    // inspect --sbom / --provenance print the predicates; several platforms by platform.
    let (out, _) = fresh.ok(&["inspect", "--sbom", &by_idx]);
    let sbom: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3", "{out}");
    let (out, _) = fresh.ok(&["inspect", "--provenance", &by_ref]);
    let prov: Value = serde_json::from_str(&out).unwrap();
    assert!(
        prov["buildDefinition"]["resolvedDependencies"].is_array(),
        "{out}"
    );
    let (out, _) = fresh.ok(&["inspect", "--provenance", &multi_ref]);
    let by_platform: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        by_platform["linux/arm64"][0]["buildDefinition"]["externalParameters"]["platform"],
        "linux/arm64",
        "{out}"
    );

    // The building store has the image locally; --remote reads the registry anyway.
    let (out, _) = env.ok(&["verify", "--key", &public, &by_ref]);
    assert!(!out.contains("referrers tag"), "local store first: {out}");
    let (out, _) = env.ok(&["verify", "--remote", "--key", &public, &by_ref]);
    assert!(out.contains("(referrers tag)"), "{out}");
    let e = env.fails(&["inspect", "--remote", &by_ref]);
    assert!(e.contains("--sbom or --provenance"), "{e}");

    // buildx's `imagetools inspect --format '{{json .SBOM}}'|'{{json .Provenance}}'`: one image as is,
    // several by platform, `{}` without (docker/buildx util/imagetools/printers.go, loader.go).
    let tools = |image: &str, format: &str| -> Value {
        let (out, _) = fresh.ok(&["imagetools", "inspect", "--format", format, image]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    assert_eq!(
        tools(&by_idx, "{{json .SBOM}}")["SPDX"]["spdxVersion"],
        "SPDX-2.3"
    );
    assert_eq!(
        tools(&by_ref, "{{json .SBOM}}")["SPDX"]["spdxVersion"],
        "SPDX-2.3"
    );
    let p = tools(&multi_idx, "{{json .Provenance}}");
    assert_eq!(
        p["linux/arm64"]["SLSA"]["buildDefinition"]["externalParameters"]["platform"],
        "linux/arm64",
        "{p}"
    );
    assert!(p.get("unknown/unknown").is_none(), "{p}");
    assert_eq!(tools(&bare, "{{json .SBOM}}"), serde_json::json!({}));
    let e = fresh.fails(&[
        "imagetools",
        "inspect",
        "--format",
        "{{json .Image}}",
        &bare,
    ]);
    assert!(e.contains("{{json .SBOM}}"), "{e}");
    let (raw, _) = fresh.ok(&["imagetools", "inspect", "--raw", &multi_idx]);
    assert_eq!(
        serde_json::from_str::<Value>(&raw).unwrap(),
        skopeo_inspect(
            &["--raw", "--tls-verify=false"],
            &format!("docker://{multi_idx}")
        )
    );
    let (summary, _) = fresh.ok(&["imagetools", "inspect", &multi_idx]);
    assert!(
        summary.starts_with(&format!("Name:      {multi_idx}\n")),
        "{summary}"
    );
    assert!(summary.contains("Platform:  linux/arm64"), "{summary}");
    assert!(summary.contains("Platform:  unknown/unknown"), "{summary}");
}

/// A loopback HTTP proxy in front of `upstream` (docker-registry 2.8, which has no referrers API) that
/// answers `GET /v2/<name>/referrers/<digest>` as a registry with the API does, with the index the
/// registry keeps under the referrers tag `sha256-<hex>` (the same document); every other request goes
/// through unchanged. Returns its address and the request lines it saw.
fn referrers_api_proxy(upstream: &str) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (upstream, log) = (upstream.to_owned(), seen.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (upstream, log) = (upstream.clone(), log.clone());
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut reader = BufReader::new(conn.try_clone()?);
                let mut line = String::new();
                reader.read_line(&mut line)?;
                let mut parts = line.split_whitespace();
                let (method, mut target) = (
                    parts.next().unwrap_or("").to_owned(),
                    parts.next().unwrap_or("").to_owned(),
                );
                log.lock().unwrap().push(format!("{method} {target}"));
                let mut head = String::new();
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h)?;
                    if h.trim_end().is_empty() {
                        break;
                    }
                    let lower = h.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if !lower.starts_with("connection:") {
                        head.push_str(&h);
                    }
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body)?;
                let path = target.split('?').next().unwrap_or("").to_owned();
                if let (true, Some((repo, digest))) =
                    (method == "GET", path.split_once("/referrers/"))
                {
                    target = format!("{repo}/manifests/{}", digest.replacen(':', "-", 1));
                }
                let mut up = std::net::TcpStream::connect(&upstream)?;
                up.write_all(
                    format!("{method} {target} HTTP/1.1\r\n{head}Connection: close\r\n\r\n")
                        .as_bytes(),
                )?;
                up.write_all(&body)?;
                let mut answer = Vec::new();
                up.read_to_end(&mut answer)?;
                let mut conn = conn;
                conn.write_all(&answer)
            });
        }
    });
    (addr, seen)
}

/// Through a registry with the OCI 1.1 referrers API, `rbuild verify` and `inspect` find the
/// attestations by it (distribution spec 1.1, "Listing Referrers"), asking for in-toto artifacts only.
#[test]
fn verify_reads_attestations_through_the_referrers_api_when_the_registry_has_it() {
    let reg = Registry::start();
    let (proxy, seen) = referrers_api_proxy(&reg.addr);
    let env = Env::new();
    let (key, public) = keypair(env.dir.path(), "signer");
    let ctx = env.context(
        "app",
        &[
            ("Dockerfile", "FROM scratch\nCOPY hi /hi\n"),
            ("hi", "hi\n"),
        ],
    );
    let image = format!("{}/api/app:1", reg.addr);
    let (stdout, _) = env.build_plain(
        &image,
        &ctx,
        &[
            "--sbom",
            "--provenance",
            "--sign-key",
            key.to_str().unwrap(),
            "--push",
        ],
    );
    let digest = pushed_digest(&stdout);
    let through = format!("{proxy}/api/app:1");
    let fresh = Env::new();
    let (out, _) = fresh.ok(&["verify", "--key", public.to_str().unwrap(), &through]);
    assert!(
        out.contains(&format!("for {through}@{digest} (referrers API)")),
        "{out}"
    );
    assert_eq!(out.lines().count(), 2, "{out}");
    let asked = seen.lock().unwrap().clone();
    assert!(
        asked.contains(&format!(
            "GET /v2/api/app/referrers/{digest}?artifactType=application%2Fvnd.in-toto%2Bjson"
        )),
        "{asked:?}"
    );
    assert!(
        !asked
            .iter()
            .any(|l| l.contains(&format!("/manifests/{}", digest.replacen(':', "-", 1)))),
        "the referrers tag was not read: {asked:?}"
    );
    let (out, _) = fresh.ok(&["inspect", "--sbom", &through]);
    let sbom: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3", "{out}");
}
