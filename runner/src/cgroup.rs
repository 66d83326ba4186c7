//! Resource limits of one sandbox through a cgroup of its own (`--memory`, `--cpu-quota`,
//! `--pids-limit`, `--cgroup-parent`).
//!
//! The outside process creates the cgroup and joins it before it forks PID 1, so every process
//! of the sandbox is in it from the start; after the sandbox is gone it moves back, reads whether
//! the OOM killer struck, and removes the cgroup. Each controller is taken from the cgroup v1
//! hierarchy that has it, else from the unified (v2) hierarchy: hybrid hosts (v1 controllers,
//! an empty v2 tree) work as well as pure v1 or v2 ones. By default the cgroup is made below the
//! one rbuild runs in, so the limits of a CI job or a systemd unit still hold for the build.

use std::path::{Path, PathBuf};

use crate::setup::{Context, SetupError};
use crate::CgroupLimits;

/// One directory made for the sandbox: its hierarchy's version and the directory the caller
/// came from (to move back to).
struct Made {
    dir: PathBuf,
    from: PathBuf,
    /// The v1 controller of its hierarchy, `None` for the unified one.
    controller: Option<String>,
}

/// The cgroups of one sandbox, joined by the calling process.
pub(crate) struct Cgroup {
    made: Vec<Made>,
    memory: Option<(PathBuf, bool)>,
}

/// `(mount point, fstype, super options)` of each cgroup mount.
fn cgroup_mounts() -> Vec<(PathBuf, bool, Vec<String>)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mount_point = pre.split(' ').nth(4)?;
            let mut post = post.split(' ');
            let fstype = post.next()?;
            let opts = post.nth(1).unwrap_or("");
            let v2 = match fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            Some((
                PathBuf::from(mount_point),
                v2,
                opts.split(',').map(str::to_owned).collect(),
            ))
        })
        .collect()
}

/// The process's cgroup path in the v1 hierarchy with `controller`, or in the v2 one (`None`).
fn own_path(controller: Option<&str>) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = match controller {
            Some(c) => ctrls.split(',').any(|x| x == c),
            None => ctrls.is_empty(),
        };
        hit.then(|| path.to_owned())
    })
}

fn write(path: &Path, value: &str) -> Result<(), SetupError> {
    fs_err::write(path, value).ctx(|| format!("failed to write {value:?} to {}", path.display()))
}

impl Cgroup {
    /// Creates the cgroup(s) for `limits` and moves the calling process into them.
    pub(crate) fn create(limits: &CgroupLimits) -> Result<Option<Self>, SetupError> {
        if limits.is_empty() {
            return Ok(None);
        }
        let name = format!("rbuild-{}", std::process::id());
        let mounts = cgroup_mounts();
        let mut cg = Cgroup {
            made: Vec::new(),
            memory: None,
        };
        let wanted = [
            ("memory", limits.memory.is_some()),
            (
                "cpu",
                limits.cpu_quota.is_some() || limits.cpu_shares.is_some(),
            ),
            ("cpuset", limits.cpuset_cpus.is_some()),
            ("pids", limits.pids.is_some()),
        ];
        for (controller, _) in wanted.iter().filter(|(_, w)| *w) {
            let v1 = mounts
                .iter()
                .find(|(_, v2, opts)| !v2 && opts.iter().any(|o| o == controller));
            let (root, v2, own) = match v1 {
                Some((root, _, _)) => (root.clone(), false, own_path(Some(controller))),
                None => {
                    let Some((root, _, _)) = mounts.iter().find(|(_, v2, _)| *v2) else {
                        return Err(SetupError::msg(format!(
                            "cannot limit {controller}: no cgroup hierarchy has that controller"
                        )));
                    };
                    (root.clone(), true, own_path(None))
                }
            };
            let own = own.unwrap_or_else(|| "/".into());
            let from = root.join(own.trim_start_matches('/'));
            let parent = match &limits.parent {
                Some(p) => root.join(p.trim_start_matches('/')),
                None => from.clone(),
            };
            let dir = parent.join(&name);
            if cg.made.iter().any(|m| m.dir == dir) {
                // cpu and cpuacct (or all v2 controllers) share a directory.
                cg.set(controller, &dir, v2, limits)?;
                continue;
            }
            fs_err::create_dir_all(&parent)
                .ctx(|| format!("failed to create the cgroup parent {}", parent.display()))?;
            if v2 {
                let available = fs_err::read_to_string(parent.join("cgroup.subtree_control"))
                    .unwrap_or_default();
                if !available.split_whitespace().any(|c| c == *controller) {
                    write(&parent.join("cgroup.subtree_control"), &format!("+{controller}"))
                        .map_err(|_| {
                            SetupError::msg(format!(
                                "cannot limit {controller}: the {controller} controller is not enabled \
                                 for {} (enable it in its cgroup.subtree_control, or give a \
                                 --cgroup-parent where it is)",
                                parent.display()
                            ))
                        })?;
                }
            }
            fs_err::create_dir(&dir)
                .ctx(|| format!("failed to create the cgroup {}", dir.display()))?;
            cg.made.push(Made {
                dir: dir.clone(),
                from,
                controller: (!v2).then(|| (*controller).to_owned()),
            });
            cg.set(controller, &dir, v2, limits)?;
        }
        let pid = std::process::id().to_string();
        for m in &cg.made {
            write(&m.dir.join("cgroup.procs"), &pid)?;
        }
        Ok(Some(cg))
    }

    /// Writes the limit of `controller` in `dir`.
    fn set(
        &mut self,
        controller: &str,
        dir: &Path,
        v2: bool,
        l: &CgroupLimits,
    ) -> Result<(), SetupError> {
        match (controller, v2) {
            ("memory", false) => {
                let m = l.memory.unwrap_or_default();
                write(&dir.join("memory.limit_in_bytes"), &m.to_string())?;
                // Memory plus swap (`-1` unlimited); no swap beyond the limit when not given,
                // where the kernel accounts swap at all.
                let memsw = dir.join("memory.memsw.limit_in_bytes");
                let total = l.memory_swap.map_or(m.to_string(), |t| t.to_string());
                if memsw.exists() {
                    write(&memsw, &total)?;
                } else if l.memory_swap.is_some() {
                    return Err(SetupError::msg(
                        "cannot limit swap (--memory-swap): the kernel does not account swap \
                         (boot with swapaccount=1)",
                    ));
                }
                self.memory = Some((dir.to_owned(), false));
            }
            ("memory", true) => {
                let m = l.memory.unwrap_or_default();
                write(&dir.join("memory.max"), &m.to_string())?;
                // v2 limits swap alone: what `--memory-swap` gives beyond the memory limit.
                let swap = dir.join("memory.swap.max");
                let extra = match l.memory_swap {
                    Some(-1) => "max".to_owned(),
                    Some(t) => u64::try_from(t).unwrap_or(0).saturating_sub(m).to_string(),
                    None => "0".to_owned(),
                };
                if swap.exists() {
                    write(&swap, &extra)?;
                } else if l.memory_swap.is_some() {
                    return Err(SetupError::msg(
                        "cannot limit swap (--memory-swap): the kernel does not account swap",
                    ));
                }
                self.memory = Some((dir.to_owned(), true));
            }
            ("cpu", false) => {
                if let Some(quota) = l.cpu_quota {
                    let period = l.cpu_period.unwrap_or(100_000);
                    write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
                if let Some(shares) = l.cpu_shares {
                    write(&dir.join("cpu.shares"), &shares.to_string())?;
                }
            }
            ("cpu", true) => {
                if let Some(quota) = l.cpu_quota {
                    let period = l.cpu_period.unwrap_or(100_000);
                    write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
                }
                if let Some(shares) = l.cpu_shares {
                    write(&dir.join("cpu.weight"), &cpu_weight(shares).to_string())?;
                }
            }
            ("cpuset", v2) => {
                let cpus = l.cpuset_cpus.clone().unwrap_or_default();
                if !v2 {
                    // A v1 cpuset cgroup takes no process before it has memory nodes: its parent's.
                    let parent = dir.parent().unwrap_or(dir);
                    let mems = fs_err::read_to_string(parent.join("cpuset.mems"))
                        .ctx(|| format!("failed to read {}", parent.display()))?;
                    write(&dir.join("cpuset.mems"), mems.trim())?;
                }
                write(&dir.join("cpuset.cpus"), &cpus).map_err(|_| {
                    SetupError::msg(format!(
                        "--cpuset-cpus {cpus}: not CPUs this machine has (or its parent cgroup allows)"
                    ))
                })?;
            }
            ("pids", _) => write(
                &dir.join("pids.max"),
                &l.pids.unwrap_or_default().to_string(),
            )?,
            _ => {}
        }
        Ok(())
    }
}

/// `cpu.weight` (1..=10000) for `cpu.shares` (2..=262144), as runc converts them: 1024 is 39.
fn cpu_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

impl Cgroup {
    /// Where each cgroup directory appears inside the sandbox, below `/sys/fs/cgroup` (read-only,
    /// as runc shows a container its own cgroups): a v1 controller's under its name, the unified
    /// one at the top, or at `unified` beside v1 ones.
    pub(crate) fn sandbox_mounts(&self) -> Vec<(String, PathBuf)> {
        let any_v1 = self.made.iter().any(|m| m.controller.is_some());
        self.made
            .iter()
            .map(|m| {
                let at = match &m.controller {
                    Some(c) => c.clone(),
                    None if any_v1 => "unified".to_owned(),
                    None => String::new(),
                };
                (at, m.dir.clone())
            })
            .collect()
    }

    /// Whether the OOM killer killed a process of the sandbox.
    fn oom_killed(&self) -> bool {
        let Some((dir, v2)) = &self.memory else {
            return false;
        };
        let file = if *v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        let count = text.lines().find_map(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|n| n.trim().parse::<u64>().ok())
        });
        match count {
            Some(n) => n > 0,
            // Kernels before 4.13 have no oom_kill count in v1: the limit was hit.
            None => std::fs::read_to_string(dir.join("memory.failcnt"))
                .ok()
                .and_then(|n| n.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0),
        }
    }

    /// Moves the calling process back, removes the cgroups; returns whether the OOM killer struck.
    pub(crate) fn finish(self) -> bool {
        let oom = self.oom_killed();
        let pid = std::process::id().to_string();
        for m in self.made.iter().rev() {
            let _ = std::fs::write(m.from.join("cgroup.procs"), &pid); // best effort: the rmdir says
                                                                       // The last killed processes of the sandbox may take a moment to leave the cgroup.
            let mut tries = 0;
            while let Err(e) = std::fs::remove_dir(&m.dir) {
                tries += 1;
                if tries == 50 {
                    crate::setup::report(&format!(
                        "warning: cannot remove cgroup {}: {e}",
                        m.dir.display()
                    ));
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        oom
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_shares_become_cpu_weight_as_runc_converts_them() {
        assert_eq!(super::cpu_weight(1024), 39);
        assert_eq!(super::cpu_weight(2), 1);
        assert_eq!(super::cpu_weight(262_144), 10_000);
        assert_eq!(super::cpu_weight(512), 20);
    }
}
