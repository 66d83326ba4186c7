//! `rbuild info`: what this machine offers rbuild (kernel features and the code path each one
//! selects, isolation, rootless ids, the store, registries), and what to do about anything
//! missing, like `docker info` / `buildah info`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::cli::{InfoArgs, InfoFormat};

#[derive(Serialize)]
struct Info {
    version: &'static str,
    kernel: Kernel,
    /// The isolation a build uses without `--isolation`, and whether it works here.
    isolation: Isolation,
    rootless: runner::Caller,
    store: Store,
    registries: Registries,
    /// What to do about anything missing; empty when nothing is.
    problems: Vec<String>,
}

#[derive(Serialize)]
struct Kernel {
    release: String,
    features: Vec<runner::FeatureReport>,
}

#[derive(Serialize)]
struct Isolation {
    default: &'static str,
    usable: bool,
    detail: String,
}

#[derive(Serialize)]
struct Store {
    path: PathBuf,
    filesystem: String,
    free_bytes: Option<u64>,
}

#[derive(Serialize)]
struct Registries {
    mirrors: Vec<String>,
    certs_d: PathBuf,
    /// Registries with CA certificates in `certs_d`.
    certs_d_hosts: Vec<String>,
    insecure: Vec<String>,
}

pub(crate) fn info(args: &InfoArgs, root: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("finding the rbuild binary")?;
    // The probe's overlay goes where the snapshots go, so its answer holds for them.
    let probe_parent = if root.is_dir() {
        root.to_owned()
    } else {
        std::env::temp_dir()
    };
    let scratch = probe_parent.join(format!(".info-probe-{}", std::process::id()));
    let features = runner::probe(&exe, &scratch).context("probing the kernel")?;
    let mut problems = features.problems();
    let (usable, detail) = features.isolation();
    let isolation = Isolation {
        default: "namespaces",
        usable,
        detail,
    };
    let rootless = rootless(&mut problems);
    let store = store(root, &mut problems);
    let registries = registries(args);
    let info = Info {
        version: env!("CARGO_PKG_VERSION"),
        kernel: Kernel {
            release: rustix::system::uname()
                .release()
                .to_string_lossy()
                .into_owned(),
            features: features.report(),
        },
        isolation,
        rootless,
        store,
        registries,
        problems,
    };
    match args.format {
        InfoFormat::Json => println!("{}", serde_json::to_string_pretty(&info)?),
        InfoFormat::Text => print!("{}", text(&info)),
    }
    Ok(())
}

fn rootless(problems: &mut Vec<String>) -> runner::Caller {
    let caller = runner::Caller::current();
    if caller.rootless && (caller.subuids.is_empty() || caller.subgids.is_empty()) {
        problems.push(format!(
            "no subordinate ids for uid {}: images with files owned by other users fail; \
             add ranges with `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {}`",
            caller.uid,
            caller.name.as_deref().unwrap_or("USER")
        ));
    }
    caller
}

fn store(root: &Path, problems: &mut Vec<String>) -> Store {
    let fs = cache::Filesystem::of(root);
    if !fs.holds_overlay_uppers() {
        problems.push(format!(
            "the store {} is on {}, which cannot hold overlay upper dirs: use --root \
             on ext4, xfs or btrfs (or a volume in a container)",
            root.display(),
            fs.name
        ));
    }
    Store {
        path: root.to_owned(),
        filesystem: fs.name,
        free_bytes: fs.free_bytes,
    }
}

fn registries(args: &InfoArgs) -> Registries {
    let certs_d = registry::default_certs_d();
    Registries {
        mirrors: args.registry_mirrors.clone(),
        certs_d_hosts: registry::registries_in_certs_d(&certs_d),
        certs_d,
        insecure: args.insecure_registries.clone(),
    }
}

fn text(info: &Info) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(", ")
        }
    };
    let _ = writeln!(s, "rbuild {}", info.version);
    let _ = writeln!(s, "kernel: Linux {}", info.kernel.release);
    for f in &info.kernel.features {
        let mark = if f.available { "yes" } else { "no " };
        let _ = writeln!(s, "  {:<18} {mark}  {}", f.name, f.path);
    }
    let usable = if info.isolation.usable {
        ""
    } else {
        " (NOT usable)"
    };
    let _ = writeln!(
        s,
        "isolation: {}{usable}: {}",
        info.isolation.default, info.isolation.detail
    );
    let r = &info.rootless;
    let ranges = |v: &[(u32, u32)]| {
        list(
            &v.iter()
                .map(|(a, n)| format!("{a}+{n}"))
                .collect::<Vec<_>>(),
        )
    };
    let _ = writeln!(
        s,
        "rootless: {} (uid {}; subuids {}; subgids {})",
        if r.rootless { "yes" } else { "no" },
        r.uid,
        ranges(&r.subuids),
        ranges(&r.subgids)
    );
    let free = info.store.free_bytes.map_or("unknown".into(), |b| {
        format!("{:.1} GiB free", b as f64 / f64::from(1u32 << 30))
    });
    let _ = writeln!(
        s,
        "store: {} ({}, {free})",
        info.store.path.display(),
        info.store.filesystem
    );
    let g = &info.registries;
    let _ = writeln!(
        s,
        "registries: mirrors {}; certs.d {} ({}); insecure {}",
        list(&g.mirrors),
        g.certs_d.display(),
        list(&g.certs_d_hosts),
        list(&g.insecure)
    );
    if info.problems.is_empty() {
        let _ = writeln!(s, "problems: none");
    } else {
        let _ = writeln!(s, "problems:");
        for p in &info.problems {
            let _ = writeln!(s, "  - {p}");
        }
    }
    s
}
