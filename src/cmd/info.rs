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
    rootless: Rootless,
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
struct Rootless {
    rootless: bool,
    /// The caller's uid outside the user namespace.
    uid: u32,
    /// `(first, count)` subordinate uid and gid ranges from /etc/subuid and /etc/subgid.
    subuids: Vec<(u32, u32)>,
    subgids: Vec<(u32, u32)>,
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
    let mut problems = Vec::new();

    let overlay_ok = features.overlay.is_ok();
    let isolation = Isolation {
        default: "namespaces",
        usable: overlay_ok && features.mount_api,
        detail: if !features.mount_api {
            "Linux 5.2 or newer is needed (rbuild supports 5.10 and newer)".into()
        } else if let Err(e) = &features.overlay {
            format!("overlay cannot be mounted here: {e}")
        } else {
            "namespaces and an overlay rootfs".into()
        },
    };
    if !isolation.usable {
        problems.push(if features.user_namespace {
            "RUN steps fail: this kernel has no overlay in a user namespace, which rootless \
             builds need (Linux 5.11 or newer): run rbuild as root"
                .to_owned()
        } else {
            format!(
                "RUN steps fail ({}): load the overlay module (modprobe overlay), keep the store \
                 on ext4, xfs or btrfs, or use --isolation=chroot",
                isolation.detail
            )
        });
    }
    if let Err(e) = &features.seccomp {
        problems.push(format!(
            "the default seccomp profile does not load ({e}): RUN steps fail"
        ));
    }

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

fn rootless(problems: &mut Vec<String>) -> Rootless {
    let rootless = runner::in_user_namespace();
    // In rootless mode uid 0 here is the caller's uid outside: the first line of uid_map.
    let uid = if rootless {
        std::fs::read_to_string("/proc/self/uid_map")
            .ok()
            .and_then(|m| m.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    } else {
        rustix::process::getuid().as_raw()
    };
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|p| {
        p.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.get(2)?.parse::<u32>().ok()? == uid).then(|| f[0].to_owned())
        })
    });
    let ranges = |file: &str| {
        std::fs::read_to_string(file)
            .map(|c| runner::subordinate_ranges(&c, name.as_deref(), uid))
            .unwrap_or_default()
    };
    let (subuids, subgids) = (ranges("/etc/subuid"), ranges("/etc/subgid"));
    if rootless && (subuids.is_empty() || subgids.is_empty()) {
        problems.push(format!(
            "no subordinate ids for uid {uid}: images with files owned by other users fail; \
             add ranges with `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {}`",
            name.as_deref().unwrap_or("USER")
        ));
    }
    Rootless {
        rootless,
        uid,
        subuids,
        subgids,
    }
}

fn store(root: &Path, problems: &mut Vec<String>) -> Store {
    // The store's own dir, or the nearest existing parent it would be made in.
    let existing = root
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let filesystem = rustix::fs::statfs(existing)
        .map_or_else(|e| format!("unknown ({e})"), |s| filesystem_name(s.f_type));
    let free_bytes = rustix::fs::statvfs(existing)
        .ok()
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize));
    if matches!(filesystem.as_str(), "overlay" | "nfs" | "fuse") {
        problems.push(format!(
            "the store {} is on {filesystem}, which cannot hold overlay upper dirs: use --root \
             on ext4, xfs or btrfs (or a volume in a container)",
            root.display()
        ));
    }
    Store {
        path: root.to_owned(),
        filesystem,
        free_bytes,
    }
}

/// The name of a file system from its `statfs` magic number.
fn filesystem_name(magic: i64) -> String {
    match magic {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlay",
        0x2FC1_2FC1 => "zfs",
        0x6969 => "nfs",
        0x6573_5546 => "fuse",
        0xF2F5_2010 => "f2fs",
        _ => return format!("0x{magic:x}"),
    }
    .to_owned()
}

fn registries(args: &InfoArgs) -> Registries {
    let certs_d = registry::default_certs_d();
    let mut certs_d_hosts: Vec<String> = std::fs::read_dir(&certs_d)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    certs_d_hosts.sort();
    Registries {
        mirrors: args.registry_mirrors.clone(),
        certs_d,
        certs_d_hosts,
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
