//! buildx's flags for every RUN step, parsed as docker parses them: `--add-host`, `--shm-size`,
//! `--ulimit` (see [`runner::Rlimit::parse`]).

/// What `--add-host NAME:host-gateway` maps NAME to. buildx replaces `host-gateway` with
/// its worker's host-gateway IP (dockerd's, the bridge's gateway: where the host is seen from a RUN
/// in its own network namespace); rbuild's RUN shares the host's network namespace, where the host
/// is its own loopback.
pub const HOST_GATEWAY_IP: &str = "127.0.0.1";

/// Parses `--add-host HOST:IP` (or `HOST=IP`, as buildx also accepts); IPv6 addresses keep their
/// colons (`host:::1`, `host=::1`); `host-gateway` is [`HOST_GATEWAY_IP`].
pub fn parse_add_host(s: &str) -> Result<(String, String), String> {
    let (host, ip) = s
        .split_once('=')
        .or_else(|| s.split_once(':'))
        .ok_or_else(|| format!("invalid --add-host {s:?}: expected HOST:IP"))?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!(
            "invalid --add-host {s:?}: empty or blank host name"
        ));
    }
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if ip == "host-gateway" {
        return Ok((host.to_owned(), HOST_GATEWAY_IP.to_owned()));
    }
    ip.parse::<std::net::IpAddr>()
        .map_err(|_| format!("invalid --add-host {s:?}: {ip:?} is not an IP address"))?;
    Ok((host.to_owned(), ip.to_owned()))
}

/// Parses a memory size as docker does (`RAMInBytes`): `128m`, `1g`, `512k`, `1048576`, binary
/// multiples (`m` is MiB), an optional trailing `b`.
pub fn parse_ram(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        format!("invalid size {s:?}: expected a number with an optional unit (e.g. 128m)")
    })?;
    let mult = match unit {
        "" => 1u64,
        "k" | "ki" => 1 << 10,
        "m" | "mi" => 1 << 20,
        "g" | "gi" => 1 << 30,
        "t" | "ti" => 1 << 40,
        other => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {other:?} (k, m, g, t)"
            ))
        }
    };
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    // non-negative, and sizes stay far below 2^53
    Ok((n * mult as f64).round() as u64)
}

/// Parses docker's `--memory-swap`: a size as [`parse_ram`], or `-1` for unlimited swap.
pub fn parse_memory_swap(s: &str) -> Result<i64, String> {
    if s.trim() == "-1" {
        return Ok(-1);
    }
    let n = parse_ram(s)?;
    i64::try_from(n).map_err(|_| format!("--memory-swap {s}: too large"))
}

/// docker build's `--memory-swap`, `--cpu-shares`, `--cpuset-cpus`, checked as dockerd checks them.
#[derive(Debug, Clone, Default)]
pub struct MoreLimits {
    pub memory_swap: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub cpuset_cpus: Option<String>,
}

/// The cgroup limits of docker build's flags: `--memory`, `--cpus` (or `--cpu-quota` with
/// `--cpu-period`), `--pids-limit`, `--cgroup-parent`, and [`MoreLimits`].
pub fn cgroup_limits(
    memory: Option<u64>,
    cpus: Option<f64>,
    cpu_quota: Option<u64>,
    cpu_period: Option<u64>,
    pids: Option<u64>,
    parent: Option<String>,
    more: MoreLimits,
) -> Result<runner::CgroupLimits, String> {
    if memory.is_some_and(|m| m < 6 << 20) {
        return Err("--memory: the minimum is 6m, as docker's".into());
    }
    match (more.memory_swap, memory) {
        (Some(_), None) => {
            return Err("--memory-swap needs --memory (the limit it adds swap to)".into())
        }
        (Some(t), Some(m)) if t != -1 && u64::try_from(t).map_or(true, |t| t < m) => {
            return Err(format!(
                "--memory-swap {t}: must be at least --memory ({m}), or -1 for unlimited swap"
            ))
        }
        _ => {}
    }
    let cpu_shares = more.cpu_shares.map(|s| s.clamp(2, 262_144));
    if let Some(c) = &more.cpuset_cpus {
        let ok = !c.is_empty()
            && c.split(',').all(|r| {
                let mut ends = r.splitn(2, '-');
                ends.all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            });
        if !ok {
            return Err(format!(
                "--cpuset-cpus {c:?}: expected CPU numbers and ranges, e.g. 0-2,4"
            ));
        }
    }
    let period = cpu_period.unwrap_or(100_000);
    let quota = match (cpus, cpu_quota) {
        (Some(_), Some(_)) => return Err("--cpus and --cpu-quota cannot both be given".into()),
        (Some(c), None) if c <= 0.0 => return Err(format!("--cpus {c}: must be above 0")),
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        // positive, and CPU counts times the period stay far below 2^53
        (Some(c), None) => Some((c * period as f64).round() as u64),
        (None, q) => q,
    };
    if pids == Some(0) {
        return Err("--pids-limit 0: give at least 1".into());
    }
    Ok(runner::CgroupLimits {
        parent,
        memory,
        cpu_quota: quota,
        cpu_period: quota.map(|_| period),
        pids,
        memory_swap: more.memory_swap,
        cpu_shares,
        cpuset_cpus: more.cpuset_cpus,
    })
}

/// What `--allow` grants RUN steps beyond the sandbox (BuildKit's entitlements).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Entitlements {
    /// `network.host`: `RUN --network=host` (the `--network host` flag implies it, as in buildx).
    pub network_host: bool,
    /// `security.insecure`: `RUN --security=insecure`.
    pub security_insecure: bool,
    /// `device`: `RUN --device` (CDI devices without the autoallow annotation).
    pub device: bool,
}

impl Entitlements {
    /// Parses `--allow` values (repeatable or comma-separated).
    pub fn parse(values: &[String]) -> Result<Self, String> {
        let mut e = Self::default();
        for v in values.iter().flat_map(|v| v.split(',')) {
            match v.trim() {
                "network.host" => e.network_host = true,
                "security.insecure" => e.security_insecure = true,
                "device" => e.device = true,
                other => {
                    return Err(format!(
                        "--allow {other}: unknown entitlement (network.host, security.insecure, device)"
                    ))
                }
            }
        }
        Ok(e)
    }

    /// These entitlements, with `network.host` added when `yes`.
    #[must_use]
    pub fn with_network_host(mut self, yes: bool) -> Self {
        self.network_host |= yes;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_host_takes_docker_and_buildx_spellings() {
        assert_eq!(
            parse_add_host("db:10.0.0.5").unwrap(),
            ("db".into(), "10.0.0.5".into())
        );
        assert_eq!(
            parse_add_host("db=10.0.0.5").unwrap(),
            ("db".into(), "10.0.0.5".into())
        );
        assert_eq!(
            parse_add_host("v6:::1").unwrap(),
            ("v6".into(), "::1".into())
        );
        assert_eq!(
            parse_add_host("v6=[::1]").unwrap(),
            ("v6".into(), "::1".into())
        );
        assert!(parse_add_host("db").unwrap_err().contains("HOST:IP"));
        assert!(parse_add_host("db:nope").unwrap_err().contains("not an IP"));
        assert_eq!(
            parse_add_host("host.docker.internal:host-gateway").unwrap(),
            ("host.docker.internal".into(), "127.0.0.1".into())
        );
    }

    #[test]
    fn sizes_are_binary_as_docker() {
        assert_eq!(parse_ram("128m").unwrap(), 128 << 20);
        assert_eq!(parse_ram("1G").unwrap(), 1 << 30);
        assert_eq!(parse_ram("512kb").unwrap(), 512 << 10);
        assert_eq!(parse_ram("4096").unwrap(), 4096);
        assert!(parse_ram("12x").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn entitlements_parse_as_buildx() {
        let e = Entitlements::parse(&["network.host,security.insecure".into()]).unwrap();
        assert!(e.network_host && e.security_insecure && !e.device);
        assert!(Entitlements::parse(&["device".into()]).unwrap().device);
        assert!(Entitlements::parse(&["device=x".into()])
            .unwrap_err()
            .contains("unknown entitlement"));
    }

    #[test]
    fn cpus_become_a_quota_per_period() {
        let l = cgroup_limits(
            None,
            Some(1.5),
            None,
            None,
            None,
            None,
            MoreLimits::default(),
        )
        .unwrap();
        assert_eq!((l.cpu_quota, l.cpu_period), (Some(150_000), Some(100_000)));
        let l = cgroup_limits(
            Some(64 << 20),
            None,
            Some(5000),
            Some(10_000),
            Some(32),
            None,
            MoreLimits::default(),
        )
        .unwrap();
        assert_eq!(
            (l.memory, l.cpu_quota, l.cpu_period, l.pids),
            (Some(64 << 20), Some(5000), Some(10_000), Some(32))
        );
        assert!(cgroup_limits(
            Some(1024),
            None,
            None,
            None,
            None,
            None,
            MoreLimits::default()
        )
        .is_err());
        assert!(cgroup_limits(
            None,
            Some(1.0),
            Some(1),
            None,
            None,
            None,
            MoreLimits::default()
        )
        .is_err());
    }

    #[test]
    fn memory_swap_cpu_shares_and_cpuset_are_checked_as_dockerd() {
        let more = |swap: Option<&str>, shares, cpus: Option<&str>| MoreLimits {
            memory_swap: swap.map(|s| parse_memory_swap(s).unwrap()),
            cpu_shares: shares,
            cpuset_cpus: cpus.map(str::to_owned),
        };
        let lim = |m, more| cgroup_limits(m, None, None, None, None, None, more);
        let l = lim(Some(64 << 20), more(Some("128m"), Some(1), Some("0-1,3"))).unwrap();
        assert_eq!(
            (l.memory_swap, l.cpu_shares, l.cpuset_cpus.as_deref()),
            (Some(128 << 20), Some(2), Some("0-1,3"))
        );
        assert_eq!(
            lim(Some(64 << 20), more(Some("-1"), None, None))
                .unwrap()
                .memory_swap,
            Some(-1)
        );
        assert!(lim(None, more(Some("128m"), None, None))
            .unwrap_err()
            .contains("needs --memory"));
        assert!(lim(Some(64 << 20), more(Some("32m"), None, None))
            .unwrap_err()
            .contains("at least --memory"));
        assert!(lim(None, more(None, None, Some("0-a")))
            .unwrap_err()
            .contains("--cpuset-cpus"));
        assert!(!lim(None, more(None, Some(512), None)).unwrap().is_empty());
    }

    #[test]
    fn ulimits_parse_as_docker() {
        let l = runner::Rlimit::parse("nofile=1024:2048").unwrap();
        assert_eq!((l.name.as_str(), l.soft, l.hard), ("nofile", 1024, 2048));
        let l = runner::Rlimit::parse("core=-1").unwrap();
        assert_eq!((l.soft, l.hard), (u64::MAX, u64::MAX));
        assert!(runner::Rlimit::parse("bogus=1")
            .unwrap_err()
            .contains("one of"));
        assert!(runner::Rlimit::parse("nofile=10:5")
            .unwrap_err()
            .contains("above the hard"));
    }
}
