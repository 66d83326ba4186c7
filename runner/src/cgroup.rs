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

/// Enables `controllers` for the children of the v2 cgroup `dir` where they are not yet; the first
/// that cannot be is the error.
fn enable<'c>(dir: &Path, controllers: &[&'c str]) -> Result<(), &'c str> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&control).unwrap_or_default();
    for c in controllers {
        if !enabled.split_whitespace().any(|e| e == *c)
            && std::fs::write(&control, format!("+{c}")).is_err()
        {
            return Err(c);
        }
    }
    Ok(())
}

fn not_enabled(controller: &str, parent: &Path) -> SetupError {
    SetupError::msg(format!(
        "cannot limit {controller}: the {controller} controller is not enabled for {} (enable it in \
         its cgroup.subtree_control, or give a --cgroup-parent where it is)",
        parent.display()
    ))
}

/// Where a sandbox's v2 cgroup goes without `--cgroup-parent`: below the cgroup rbuild runs in
/// (`own`) when its children can have `controllers`, else below the nearest ancestor whose
/// children can. A v2 cgroup that holds processes cannot enable controllers for its children
/// (the kernel's "no internal processes" rule), and rbuild's own cgroup always holds rbuild: on
/// a systemd host (a CI runner's job or service, a login session) the sandbox's cgroup is then
/// made beside rbuild's, in the slice around it — as a container engine's scope would be.
/// Controllers are enabled only in a cgroup without processes.
fn v2_parent(root: &Path, own: &Path, controllers: &[&str]) -> Result<PathBuf, SetupError> {
    let mut at = own.to_path_buf();
    loop {
        let busy = at != root
            && std::fs::read_to_string(at.join("cgroup.procs"))
                .map_or(true, |p| !p.trim().is_empty());
        let enabled =
            std::fs::read_to_string(at.join("cgroup.subtree_control")).unwrap_or_default();
        let all = controllers
            .iter()
            .all(|c| enabled.split_whitespace().any(|e| e == *c));
        if all || (!busy && enable(&at, controllers).is_ok()) {
            if at != own {
                tracing::debug!(
                    parent = %at.display(),
                    "cgroup v2: the sandbox's cgroup goes below the nearest ancestor whose children can have {controllers:?}"
                );
            }
            return Ok(at);
        }
        if at == root || !at.pop() {
            let missing = controllers
                .iter()
                .find(|c| !enabled.split_whitespace().any(|e| e == **c))
                .unwrap_or(&controllers[0]);
            return Err(not_enabled(missing, own));
        }
    }
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
        let wanted: Vec<&str> = wanted.iter().filter(|(_, w)| *w).map(|(c, _)| *c).collect();
        let v2_root = mounts
            .iter()
            .find(|(_, v2, _)| *v2)
            .map(|(r, _, _)| r.clone());
        // Each controller from the v1 hierarchy that has it, else from the unified one.
        let mut unified = Vec::new();
        for controller in &wanted {
            let v1 = mounts
                .iter()
                .find(|(_, v2, opts)| !v2 && opts.iter().any(|o| o == controller));
            let Some((root, _, _)) = v1 else {
                if v2_root.is_none() {
                    return Err(SetupError::msg(format!(
                        "cannot limit {controller}: no cgroup hierarchy has that controller"
                    )));
                }
                unified.push(*controller);
                continue;
            };
            let own = own_path(Some(controller)).unwrap_or_else(|| "/".into());
            let from = root.join(own.trim_start_matches('/'));
            let parent = match &limits.parent {
                Some(p) => root.join(p.trim_start_matches('/')),
                None => from.clone(),
            };
            let dir = parent.join(&name);
            if !cg.made.iter().any(|m| m.dir == dir) {
                // cpu and cpuacct share a directory (when one hierarchy has both).
                fs_err::create_dir_all(&parent)
                    .ctx(|| format!("failed to create the cgroup parent {}", parent.display()))?;
                fs_err::create_dir(&dir)
                    .ctx(|| format!("failed to create the cgroup {}", dir.display()))?;
                cg.made.push(Made {
                    dir: dir.clone(),
                    from,
                    controller: Some((*controller).to_owned()),
                });
            }
            cg.set(controller, &dir, false, limits)?;
        }
        if let (Some(root), false) = (v2_root, unified.is_empty()) {
            // One directory for every unified controller: a process is in one v2 cgroup.
            let own = own_path(None).unwrap_or_else(|| "/".into());
            let from = root.join(own.trim_start_matches('/'));
            let parent = match &limits.parent {
                Some(p) => {
                    let parent = root.join(p.trim_start_matches('/'));
                    fs_err::create_dir_all(&parent).ctx(|| {
                        format!("failed to create the cgroup parent {}", parent.display())
                    })?;
                    enable(&parent, &unified).map_err(|c| not_enabled(c, &parent))?;
                    parent
                }
                None => v2_parent(&root, &from, &unified)?,
            };
            let dir = parent.join(&name);
            fs_err::create_dir(&dir)
                .ctx(|| format!("failed to create the cgroup {}", dir.display()))?;
            cg.made.push(Made {
                dir: dir.clone(),
                from,
                controller: None,
            });
            for controller in &unified {
                cg.set(controller, &dir, true, limits)?;
            }
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
    use super::*;

    /// A v2 tree as files: `(path, procs, subtree_control)`.
    fn tree(dirs: &[(&str, &str, &str)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for (d, procs, control) in dirs {
            let dir = t.path().join(d);
            fs_err::create_dir_all(&dir).unwrap();
            fs_err::write(dir.join("cgroup.procs"), procs).unwrap();
            fs_err::write(dir.join("cgroup.subtree_control"), control).unwrap();
        }
        t
    }

    #[test]
    fn a_v2_sandbox_cgroup_goes_below_the_nearest_ancestor_whose_children_can_have_the_controllers()
    {
        // systemd's layout: controllers handed down to the slice, rbuild in a service holding processes.
        let t = tree(&[
            ("", "1\n", "cpu memory pids"),
            ("job.slice", "", "memory pids"),
            ("job.slice/ci.service", "42\n43\n", ""),
        ]);
        let own = t.path().join("job.slice/ci.service");
        let got = v2_parent(t.path(), &own, &["memory", "pids"]).unwrap();
        assert_eq!(got, t.path().join("job.slice"));
        // Nothing was enabled in the busy cgroup.
        assert_eq!(
            fs_err::read_to_string(own.join("cgroup.subtree_control")).unwrap(),
            ""
        );
        // cpu is not handed to the slice's children and the slice holds no process: enabled there.
        let got = v2_parent(t.path(), &own, &["memory", "cpu"]).unwrap();
        assert_eq!(got, t.path().join("job.slice"));
    }

    #[test]
    fn a_busy_v2_ancestor_is_passed_over_for_the_root() {
        let t = tree(&[("", "1\n", "memory"), ("a", "7\n", ""), ("a/b", "42\n", "")]);
        let own = t.path().join("a/b");
        assert_eq!(v2_parent(t.path(), &own, &["memory"]).unwrap(), t.path());
        assert_eq!(
            fs_err::read_to_string(t.path().join("a/cgroup.subtree_control")).unwrap(),
            ""
        );
    }

    #[test]
    fn an_idle_own_v2_cgroup_is_used_as_before() {
        let t = tree(&[("", "", "memory"), ("own", "", "memory")]);
        let own = t.path().join("own");
        assert_eq!(v2_parent(t.path(), &own, &["memory"]).unwrap(), own);
    }

    #[test]
    fn cpu_shares_become_cpu_weight_as_runc_converts_them() {
        assert_eq!(super::cpu_weight(1024), 39);
        assert_eq!(super::cpu_weight(2), 1);
        assert_eq!(super::cpu_weight(262_144), 10_000);
        assert_eq!(super::cpu_weight(512), 20);
    }
}
