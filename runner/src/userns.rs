//! Rootless mode: the calling (unprivileged) process moves into a new user namespace in which it
//! is root, with the user's subordinate ids from `/etc/subuid` and `/etc/subgid` mapped after it.
//!
//! ```text
//! rbuild (uid 1000) ──fork──▶ helper: waits for the parent's unshare, then runs
//!   │                           newuidmap PARENT 0 1000 1 1 100000 65536
//!   │                           newgidmap PARENT 0 1000 1 1 100000 65536
//!   └─ unshare(CLONE_NEWUSER), wakes the helper, waits for it ── now uid 0 in the namespace
//! ```
//! From then on everything rbuild does (store files owned by any mapped id, overlay mounts with
//! `userxattr`, the sandbox's mount/pid/net namespaces) happens inside that namespace, the way
//! `podman unshare` or rootless BuildKit work. The process keeps its pid, so signals from the
//! caller reach it directly.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::process::WaitOptions;
use rustix::thread::UnshareFlags;

use crate::sys::{self, Fork};

/// Why rootless mode could not be set up; each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    #[error(
        "rootless mode needs subordinate {kind}s for user {user} (uid {id}) in {file}, and it has none: \
         as root run `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}` \
         (any free range of 65536 ids), or run rbuild as root"
    )]
    NoSubordinateIds {
        kind: &'static str,
        user: String,
        id: u32,
        file: &'static str,
    },
    #[error("rootless mode: failed to read {file}")]
    ReadIdFile {
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "rootless mode needs {tool} (setuid root) to map the user's subordinate ids, and it is not in PATH: \
         install it (`apt-get install uidmap`, `dnf install shadow-utils`), or run rbuild as root"
    )]
    MissingTool { tool: &'static str },
    #[error(
        "rootless mode cannot create a user namespace ({source}): unprivileged user namespaces are \
         disabled here (check `sysctl user.max_user_namespaces`, `kernel.unprivileged_userns_clone`, \
         AppArmor's `kernel.apparmor_restrict_unprivileged_userns`, or the container's seccomp profile); \
         run rbuild as root, or as root with --isolation=chroot where namespaces are not allowed at all"
    )]
    Unshare {
        #[source]
        source: std::io::Error,
    },
    #[error("rootless mode: {what} failed: {detail}")]
    MapIds { what: String, detail: String },
    #[error("rootless mode: failed to start the id-mapping helper")]
    Helper(#[source] std::io::Error),
}

/// One line of a `uid_map`/`gid_map`: `size` ids from `host` appear as `inside`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub host: u32,
    pub size: u32,
}

/// The subordinate id ranges of a user in an `/etc/subuid`-format file: lines `NAME_OR_ID:START:COUNT`,
/// matched by name or by numeric id, in file order; malformed lines are ignored (as shadow-utils
/// does).
pub fn subordinate_ranges(content: &str, user: Option<&str>, id: u32) -> Vec<(u32, u32)> {
    content
        .lines()
        .filter_map(|line| {
            let mut fields = line.trim().split(':');
            let owner = fields.next()?;
            let start = fields.next()?.parse::<u32>().ok()?;
            let count = fields.next()?.parse::<u32>().ok()?;
            let matches = Some(owner) == user || owner.parse::<u32>().ok() == Some(id);
            (matches && count > 0).then_some((start, count))
        })
        .collect()
}

/// The id map of rootless mode: `own` as 0, then every subordinate range after it, contiguously.
/// At most 340 lines (the kernel's limit); later ranges are dropped.
pub fn id_map(own: u32, subordinate: &[(u32, u32)]) -> Vec<IdRange> {
    let mut map = vec![IdRange {
        inside: 0,
        host: own,
        size: 1,
    }];
    let mut next = 1u32;
    for &(start, count) in subordinate.iter().take(339) {
        let Some(end) = next.checked_add(count) else {
            break;
        };
        map.push(IdRange {
            inside: next,
            host: start,
            size: count,
        });
        next = end;
    }
    map
}

/// The user name of `uid` from `/etc/passwd`, if any.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        (f.next()?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    })
}

fn find_tool(tool: &'static str) -> Result<PathBuf, RootlessError> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
        .ok_or(RootlessError::MissingTool { tool })
}

fn read_ranges(
    file: &'static str,
    kind: &'static str,
    user: Option<&str>,
    id: u32,
) -> Result<Vec<IdRange>, RootlessError> {
    let content = match std::fs::read_to_string(file) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(RootlessError::ReadIdFile { file, source }),
    };
    let ranges = subordinate_ranges(&content, user, id);
    if ranges.is_empty() {
        return Err(RootlessError::NoSubordinateIds {
            kind,
            user: user.map_or_else(|| id.to_string(), str::to_owned),
            id,
            file,
        });
    }
    Ok(id_map(id, &ranges))
}

/// Arguments of `newuidmap PID …`: the map as `inside host size` triples.
fn map_args(map: &[IdRange]) -> Vec<String> {
    map.iter()
        .flat_map(|r| [r.inside, r.host, r.size])
        .map(|n| n.to_string())
        .collect()
}

/// Runs one map tool for `pid`; its stderr becomes the error detail.
fn run_map(tool: &Path, pid: u32, map: &[IdRange]) -> Result<(), String> {
    let out = Command::new(tool)
        .arg(pid.to_string())
        .args(map_args(map))
        .output()
        .map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} exited with {}: {}",
            tool.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Moves this process into a new user namespace where it is root (see the module docs). Does
/// nothing for root. Must be called while the process has a single thread (checked: `unshare`
/// of a user namespace requires it), so early in `main()`.
pub fn enter_rootless() -> Result<(), RootlessError> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    if rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let user = user_name(uid);
    let uid_map = read_ranges("/etc/subuid", "uid", user.as_deref(), uid)?;
    let gid_map = read_ranges("/etc/subgid", "gid", user.as_deref(), gid)?;
    let newuidmap = find_tool("newuidmap")?;
    let newgidmap = find_tool("newgidmap")?;

    let (go_r, go_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| RootlessError::Helper(e.into()))?;
    let (err_r, err_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| RootlessError::Helper(e.into()))?;
    let parent = rustix::process::getpid()
        .as_raw_nonzero()
        .get()
        .unsigned_abs();
    let helper = match sys::fork().map_err(RootlessError::Helper)? {
        Fork::Child => {
            drop(go_w);
            drop(err_r);
            let mut byte = [0u8; 1];
            // EOF instead of the byte: the parent could not unshare and reports that itself.
            if std::fs::File::from(go_r).read(&mut byte).ok() != Some(1) {
                std::process::exit(0);
            }
            let result = run_map(&newuidmap, parent, &uid_map)
                .and_then(|()| run_map(&newgidmap, parent, &gid_map));
            if let Err(detail) = result {
                let _ = std::fs::File::from(err_w).write_all(detail.as_bytes());
                std::process::exit(1);
            }
            std::process::exit(0);
        }
        Fork::Parent(pid) => pid,
    };
    drop(go_r);
    drop(err_w);
    let unshared = sys::unshare(UnshareFlags::NEWUSER);
    let mut go = std::fs::File::from(go_w);
    if unshared.is_ok() {
        // A failed write means the helper died; its exit status says so below.
        let _ = go.write_all(b"+");
    }
    drop(go);
    let mut detail = String::new();
    let _ = std::fs::File::from(err_r).read_to_string(&mut detail);
    let status = rustix::process::waitpid(Some(helper), WaitOptions::empty());
    if let Err(source) = unshared {
        return Err(RootlessError::Unshare { source });
    }
    let ok = matches!(status, Ok(Some((_, s))) if s.exit_status() == Some(0));
    if !ok {
        if detail.is_empty() {
            let _ = write!(detail, "the helper ended with {status:?}");
        }
        return Err(RootlessError::MapIds {
            what: "mapping the subordinate ids".into(),
            detail,
        });
    }
    if !rustix::process::geteuid().is_root() {
        return Err(RootlessError::MapIds {
            what: "becoming root in the user namespace".into(),
            detail: format!("uid is still {}", rustix::process::geteuid().as_raw()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_match_name_or_id_in_file_order() {
        let file = "alice:100000:65536\nbob:165536:65536\n# comment\n1000:300000:10\nalice:400000:5\nbad line\nalice:x:1\n";
        assert_eq!(
            subordinate_ranges(file, Some("alice"), 1000),
            vec![(100000, 65536), (300000, 10), (400000, 5)]
        );
        assert_eq!(subordinate_ranges(file, Some("carol"), 1001), vec![]);
        assert_eq!(subordinate_ranges(file, None, 1000), vec![(300000, 10)]);
    }

    #[test]
    fn map_puts_own_id_at_zero_and_ranges_after_it() {
        let map = id_map(1000, &[(100000, 65536), (300000, 10)]);
        assert_eq!(
            map,
            vec![
                IdRange {
                    inside: 0,
                    host: 1000,
                    size: 1
                },
                IdRange {
                    inside: 1,
                    host: 100000,
                    size: 65536
                },
                IdRange {
                    inside: 65537,
                    host: 300000,
                    size: 10
                },
            ]
        );
        assert_eq!(
            map_args(&map[..2]),
            ["0", "1000", "1", "1", "100000", "65536"]
        );
    }
}

/// Who runs rbuild, as `rbuild info` reports it: rootless or not, the caller's uid outside any user
/// namespace, its user name, and its subordinate uid and gid ranges (`(first, count)`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Caller {
    /// In the user namespace of rootless mode.
    pub rootless: bool,
    /// The uid outside the namespace.
    pub uid: u32,
    /// Its name in /etc/passwd, if any.
    #[serde(skip)]
    pub name: Option<String>,
    /// Ranges from /etc/subuid.
    pub subuids: Vec<(u32, u32)>,
    /// Ranges from /etc/subgid.
    pub subgids: Vec<(u32, u32)>,
}

impl Caller {
    /// Reads the caller's ids from /proc/self/uid_map, /etc/passwd, /etc/subuid and /etc/subgid.
    pub fn current() -> Self {
        let rootless = crate::in_user_namespace();
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
                .map(|c| subordinate_ranges(&c, name.as_deref(), uid))
                .unwrap_or_default()
        };
        Self {
            rootless,
            uid,
            subuids: ranges("/etc/subuid"),
            subgids: ranges("/etc/subgid"),
            name,
        }
    }
}
