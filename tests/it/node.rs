//! The Node/Express app of the Docker primers, end to end (issue #8): a Debian base from debootstrap
//! (scripts/make-debian.sh, cached between runs), a node base built by rbuild with Debian's nodejs and npm,
//! the app (examples/node-express) built, run and answered over loopback, cache behaviour on edits, the
//! production template, and a push read back by skopeo. Timings are printed (run with --nocapture).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{require, sh, Env, Registry, RBUILD};

const APP_ADDR: &str = "127.0.0.1:4000";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs one of the repository's scripts against the test store, asserting success.
fn script(env: &Env, path: &str, args: &[&str], vars: &[(&str, &str)]) -> String {
    let out = Command::new(repo().join(path))
        .args(args)
        .env("RBUILD", RBUILD)
        .env("RBUILD_ROOT", env.root())
        .env("NO_COLOR", "1")
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("running script");
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{path} {args:?} failed\nstdout:\n{so}\nstderr:\n{se}"
    );
    format!("{so}{se}")
}

/// The example's files copied to a fresh context dir.
fn app_context(env: &Env) -> PathBuf {
    let ctx = env.dir.path().join("app");
    std::fs::create_dir_all(&ctx).unwrap();
    for f in [
        "index.js",
        "build.js",
        "package.json",
        "package-lock.json",
        "Dockerfile",
        "Dockerfile.prod",
        ".dockerignore",
    ] {
        std::fs::copy(repo().join("examples/node-express").join(f), ctx.join(f)).unwrap();
    }
    ctx
}

/// Body of `GET /` when the server answers 200.
fn get(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// Whether progress shows the step whose title contains `title` as CACHED.
fn cached(progress: &str, title: &str) -> bool {
    step_lines(progress, title).any(|l| l.ends_with(" CACHED"))
}

/// Progress lines of the step whose title (`#N [..] TITLE`) contains `title`.
fn step_lines<'a>(progress: &'a str, title: &str) -> impl Iterator<Item = &'a str> + 'a {
    let number = progress
        .lines()
        .find(|l| l.starts_with('#') && l.contains(title))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no step {title:?} in:\n{progress}"))
        .to_owned();
    progress
        .lines()
        .filter(move |l| l.split_whitespace().next() == Some(number.as_str()))
}

/// The `DONE` time of a step, in seconds.
fn step_secs(progress: &str, title: &str) -> f64 {
    step_lines(progress, title)
        .find_map(|l| l.split_once(" DONE ")?.1.strip_suffix('s')?.parse().ok())
        .unwrap_or_else(|| panic!("step {title:?} did not run:\n{progress}"))
}

fn timed(f: impl FnOnce() -> (String, String)) -> (String, f64) {
    let t = Instant::now();
    let (_, stderr) = f();
    (stderr, t.elapsed().as_secs_f64())
}

/// PIDs of processes running the example's server.
fn servers() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c == b"node\0index.js\0" || c == b"node\0dist/index.js\0")
        })
        .collect()
}

#[test]
fn node_express_app_builds_runs_caches_and_ships_a_production_image() {
    require("/usr/sbin/debootstrap", "debootstrap");
    require("/usr/bin/skopeo", "skopeo");
    assert!(
        get(APP_ADDR).is_none() && servers().is_empty(),
        "something already serves {APP_ADDR}"
    );
    let env = Env::new();
    let reg = Registry::start();
    let mut times = Vec::new();

    // Bases: Debian from debootstrap (tarball cached per machine), node from Debian's packages. Both pushed
    // (tagged only with their registry names: `--push` pushes every tag, as buildx does).
    let debian = format!("{}/library/debian:bookworm", reg.addr);
    let t = Instant::now();
    script(
        &env,
        "scripts/make-debian.sh",
        &[&debian],
        &[("RBUILD_FLAGS", "--push")],
    );
    times.push((
        "debian base (cached rootfs tarball)",
        t.elapsed().as_secs_f64(),
    ));
    let node = format!("{}/library/node:18", reg.addr);
    let t = Instant::now();
    let out = script(
        &env,
        "examples/node-express/make-base.sh",
        &[&node],
        &[("RBUILD_FLAGS", "--push"), ("DEBIAN", &debian)],
    );
    times.push((
        "node base (apt-get install nodejs npm)",
        t.elapsed().as_secs_f64(),
    ));
    assert!(out.contains("apt-get update"), "{out}");
    let (v, _) = env.ok(&["run", &node, "node", "--version"]);
    assert!(v.starts_with("v18."), "Debian bookworm's node: {v}");

    // The app, with a local node_modules and .env that .dockerignore keeps out.
    let ctx = app_context(&env);
    let c = ctx.to_str().unwrap();
    std::fs::create_dir_all(ctx.join("node_modules/left-over")).unwrap();
    std::fs::write(ctx.join("node_modules/left-over/index.js"), "boom").unwrap();
    std::fs::write(ctx.join(".env"), "SECRET=hunter2\n").unwrap();
    std::fs::write(ctx.join("debug.log"), "noise\n").unwrap();
    let base_arg = format!("BASE={node}");
    let build_app = || {
        env.ok(&[
            "-t",
            "my-app",
            "--progress",
            "plain",
            "--build-arg",
            &base_arg,
            c,
        ])
    };
    let (cold, secs) = timed(build_app);
    times.push(("app, cold (npm install)", secs));
    assert!(!cached(&cold, "RUN npm install"), "{cold}");

    let (listing, _) = env.ok(&[
        "run",
        "my-app",
        "sh",
        "-c",
        "ls -A /app; ls /app/node_modules | grep -cx express; \
         test ! -e /app/.env && test ! -e /app/node_modules/left-over && test ! -e /app/debug.log && echo clean",
    ]);
    assert!(
        listing.contains("index.js") && listing.contains("package.json"),
        "{listing}"
    );
    assert!(
        listing.lines().any(|l| l == "1"),
        "express installed: {listing}"
    );
    assert!(
        listing.trim_end().ends_with("clean"),
        ".env/node_modules leaked: {listing}"
    );

    // `rbuild run my-app` serves Hello World on the host network; SIGTERM stops it cleanly.
    let mut server = Command::new(RBUILD)
        .arg("--root")
        .arg(env.root())
        .args(["run", "my-app"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let body = loop {
        if let Some(b) = get(APP_ADDR) {
            break b;
        }
        if let Some(status) = server.try_wait().unwrap() {
            let mut err = String::new();
            server
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("rbuild run exited early ({status}): {err}");
        }
        if t.elapsed() > Duration::from_secs(30) {
            let _ = server.kill();
            panic!("the server did not answer on {APP_ADDR} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    times.push((
        "rbuild run until the first answer",
        t.elapsed().as_secs_f64(),
    ));
    assert_eq!(body, "Hello World");
    sh(Command::new("kill").args(["-TERM", &server.id().to_string()]));
    let t = Instant::now();
    let status = loop {
        if let Some(s) = server.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = server.kill();
            panic!("rbuild run did not end within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    server
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "clean exit on SIGTERM; output: {out}"
    );
    assert!(out.contains("listening on port 4000"), "{out}");
    assert!(get(APP_ADDR).is_none(), "still answering after SIGTERM");
    assert_eq!(servers(), Vec::<u32>::new(), "server processes left behind");

    // Editing index.js re-runs neither `npm install` nor `COPY package.json`.
    let src = std::fs::read_to_string(ctx.join("index.js")).unwrap();
    std::fs::write(ctx.join("index.js"), format!("// edited\n{src}")).unwrap();
    let (edit, secs) = timed(build_app);
    times.push(("app, after an index.js edit", secs));
    assert!(cached(&edit, "RUN npm install"), "{edit}");
    assert!(cached(&edit, "COPY package.json"), "{edit}");
    assert!(!cached(&edit, "COPY . ."), "{edit}");
    let (head, _) = env.ok(&["run", "my-app", "head", "-n1", "/app/index.js"]);
    assert_eq!(head.trim(), "// edited");

    // The production template: multi-stage, cache mount, non-root user, healthcheck; pushed and read back.
    let prod = format!("{}/demo/my-app:prod", reg.addr);
    let image_arg = format!("NODE_IMAGE={}/library/node", reg.addr);
    let prod_build = || {
        env.ok(&[
            "build",
            "-f",
            ctx.join("Dockerfile.prod").to_str().unwrap(),
            "-t",
            &prod,
            "--push",
            "--progress",
            "plain",
            "--build-arg",
            &image_arg,
            c,
        ])
    };
    let (cold_prod, secs) = timed(prod_build);
    times.push(("prod, cold (npm ci twice, empty npm cache)", secs));
    let cold_ci = step_secs(&cold_prod, "npm ci --omit=dev");
    let inspect = sh(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--config",
        // The config blob as pushed: without --raw skopeo converts it to the OCI struct, which has no
        // Healthcheck.
        "--raw",
        &format!("docker://{prod}"),
    ]));
    let cfg: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let config = &cfg["config"];
    assert_eq!(config["User"], "app", "{inspect}");
    assert!(
        config["ExposedPorts"].get("4000/tcp").is_some(),
        "{inspect}"
    );
    assert!(
        config["Env"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("NODE_ENV=production")),
        "{inspect}"
    );
    let health = config["Healthcheck"]["Test"].as_array().unwrap();
    assert_eq!(health[0], "CMD-SHELL", "{inspect}");
    assert!(
        health[1].as_str().unwrap().contains("127.0.0.1:4000"),
        "{inspect}"
    );
    assert_eq!(
        config["Healthcheck"]["Interval"], 30_000_000_000u64,
        "{inspect}"
    );
    assert_eq!(config["Cmd"], serde_json::json!(["node", "dist/index.js"]));

    // Only the build output and production dependencies ship, owned by app.
    let (files, _) = env.ok(&[
        "run",
        &prod,
        "sh",
        "-c",
        "id -un; ls -A; stat -c %U dist/index.js; ls node_modules | grep -cx express; \
         ls node_modules | grep -cx is-number; head -n1 dist/index.js",
    ]);
    let lines: Vec<&str> = files.lines().collect();
    assert_eq!(lines[0], "app", "{files}");
    let listing: Vec<&str> = lines[1..lines.len() - 4].to_vec();
    let mut sorted = listing.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        ["dist", "node_modules", "package-lock.json", "package.json"],
        "no sources or build files in the production image: {files}"
    );
    assert_eq!(
        &lines[lines.len() - 4..lines.len() - 1],
        ["app", "1", "0"],
        "{files}"
    );
    assert!(
        lines[lines.len() - 1].starts_with("// built by build.js"),
        "{files}"
    );

    // A package.json change re-runs `npm ci` in both stages, now with a warm npm cache.
    let pkg = std::fs::read_to_string(ctx.join("package.json")).unwrap();
    std::fs::write(
        ctx.join("package.json"),
        pkg.replace("\"version\": \"1.0.0\"", "\"version\": \"1.0.1\""),
    )
    .unwrap();
    let (warm_prod, secs) = timed(prod_build);
    times.push(("prod, after a package.json change (warm npm cache)", secs));
    assert!(!cached(&warm_prod, "npm ci --omit=dev"), "{warm_prod}");
    let warm_ci = step_secs(&warm_prod, "npm ci --omit=dev");
    times.push(("  npm ci --omit=dev step, cold cache", cold_ci));
    times.push(("  npm ci --omit=dev step, warm cache", warm_ci));

    // Serves from the production image too, as user app.
    let (out, _) = env.ok(&[
        "run",
        &prod,
        "sh",
        "-c",
        "node dist/index.js & pid=$!; for i in $(seq 50); do \
           node -e \"require('http').get('http://127.0.0.1:4000/', r => { r.on('data', d => process.stdout.write(d)); r.on('end', () => process.exit(0)); }).on('error', () => process.exit(1))\" && break; \
           sleep 0.2; done; kill $pid",
    ]);
    assert!(out.contains("Hello World"), "{out}");

    for (what, secs) in &times {
        #[allow(clippy::print_stderr)] // the timings are this test's report (`-- --nocapture`)
        {
            eprintln!("node-express timing: {what}: {secs:.1} s");
        }
    }
}
