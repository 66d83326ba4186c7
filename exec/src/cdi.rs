//! `RUN --device` through the Container Device Interface, as BuildKit (≥ 0.20) does: CDI specs
//! (JSON or YAML) are read from `/etc/cdi`, `/var/run/cdi` and `/etc/buildkit/cdi` (or the
//! colon-separated [`SPEC_DIRS_ENV`], as buildkitd's `specDirs`), a device name
//! `vendor.com/class=name` picks one device, `vendor.com/class=*` all of its kind, and
//! `vendor.com/class` the first one. Its container edits (env, device nodes, bind mounts) are applied
//! to the RUN; hooks, which BuildKit has runc run, are refused: rbuild has no hook runner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Overrides the CDI spec directories (colon-separated).
pub const SPEC_DIRS_ENV: &str = "RBUILD_CDI_SPEC_DIRS";

/// BuildKit's annotation (on a spec or one device) that lets builds use a device without
/// `--allow device`.
pub const AUTOALLOW: &str = "org.mobyproject.buildkit.device.autoallow";

const DEFAULT_DIRS: &[&str] = &["/etc/cdi", "/var/run/cdi", "/etc/buildkit/cdi"];

/// A CDI error, naming the spec file or the device.
#[derive(Debug, thiserror::Error)]
pub enum CdiError {
    #[error("failed to read CDI spec {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid CDI spec {path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("invalid CDI device name {0:?}: expected vendor.com/class=name")]
    Name(String),
    #[error(
        "CDI device {device} has {hook} hooks ({path}), which rbuild does not run (BuildKit has runc run them)"
    )]
    Hooks {
        device: String,
        hook: String,
        path: String,
    },
}

/// One CDI spec file (the fields rbuild applies; others are ignored).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecFile {
    /// `vendor.com/class`.
    pub kind: String,
    #[serde(default)]
    annotations: BTreeMap<String, serde_json::Value>,
    /// The devices of this kind.
    pub devices: Vec<DeviceEntry>,
    /// Edits applied with any device of this spec.
    #[serde(default)]
    pub container_edits: Edits,
}

/// One device of a spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceEntry {
    /// The name after `=`.
    pub name: String,
    #[serde(default)]
    annotations: BTreeMap<String, serde_json::Value>,
    /// Edits applied with this device.
    #[serde(default)]
    pub container_edits: Edits,
}

/// CDI `containerEdits`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Edits {
    /// `KEY=value`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Device nodes to give to the container.
    #[serde(default)]
    pub device_nodes: Vec<DeviceNode>,
    /// Host paths to bind.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// OCI hooks (refused).
    #[serde(default)]
    pub hooks: Vec<Hook>,
}

/// A CDI device node.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    /// Path inside the container.
    pub path: String,
    /// Path on the host (defaults to `path`).
    #[serde(default)]
    pub host_path: Option<String>,
}

/// A CDI mount.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    /// Host path.
    pub host_path: String,
    /// Path inside the container.
    pub container_path: String,
    /// Mount options (`ro` is honoured; binds are always nosuid and nodev here).
    #[serde(default)]
    pub options: Vec<String>,
}

/// A CDI hook.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    /// `createContainer`, `startContainer`, ...
    pub hook_name: String,
    /// The executable.
    pub path: String,
}

/// A device found in the specs, with what to apply.
#[derive(Debug, Clone)]
pub struct Found {
    /// `vendor.com/class=name`.
    pub name: String,
    /// Allowed without `--allow device` (the autoallow annotation).
    pub autoallow: bool,
    /// Spec-wide edits then the device's own.
    pub edits: Vec<Edits>,
}

/// The specs of the configured directories.
#[derive(Debug, Default)]
pub struct Registry {
    specs: Vec<SpecFile>,
}

/// The spec directories: [`SPEC_DIRS_ENV`] when set, BuildKit's defaults otherwise.
#[must_use]
pub fn spec_dirs() -> Vec<PathBuf> {
    match std::env::var_os(SPEC_DIRS_ENV) {
        Some(v) => std::env::split_paths(&v)
            .filter(|p| !p.as_os_str().is_empty())
            .collect(),
        None => DEFAULT_DIRS.iter().map(PathBuf::from).collect(),
    }
}

impl Registry {
    /// Reads every `*.json`, `*.yaml` and `*.yml` of `dirs` (missing directories are skipped),
    /// in directory order then name order.
    pub fn load(dirs: &[PathBuf]) -> Result<Self, CdiError> {
        let mut specs = Vec::new();
        for dir in dirs {
            let Ok(entries) = fs_err::read_dir(dir) else {
                continue;
            };
            let mut paths: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("json" | "yaml" | "yml")
                    )
                })
                .collect();
            paths.sort();
            for path in paths {
                specs.push(read_spec(&path)?);
            }
        }
        Ok(Self { specs })
    }

    /// The devices `name` selects (empty when none matches).
    pub fn resolve(&self, name: &str) -> Result<Vec<Found>, CdiError> {
        let (kind, dev) = match name.split_once('=') {
            Some((k, d)) if !d.is_empty() => (k, Some(d)),
            Some(_) => return Err(CdiError::Name(name.into())),
            None => (name, None),
        };
        if !valid_kind(kind) {
            return Err(CdiError::Name(name.into()));
        }
        let mut out = Vec::new();
        for spec in self.specs.iter().filter(|s| s.kind == kind) {
            for d in &spec.devices {
                let hit = match dev {
                    Some("*") => true,
                    Some(n) => d.name == n,
                    None => out.is_empty(),
                };
                if !hit {
                    continue;
                }
                let full = format!("{kind}={}", d.name);
                for edits in [&spec.container_edits, &d.container_edits] {
                    if let Some(h) = edits.hooks.first() {
                        return Err(CdiError::Hooks {
                            device: full,
                            hook: h.hook_name.clone(),
                            path: h.path.clone(),
                        });
                    }
                }
                out.push(Found {
                    autoallow: truthy(d.annotations.get(AUTOALLOW))
                        || truthy(spec.annotations.get(AUTOALLOW)),
                    name: full,
                    edits: vec![spec.container_edits.clone(), d.container_edits.clone()],
                });
            }
            if dev.is_some_and(|d| d != "*") && !out.is_empty() {
                break;
            }
        }
        Ok(out)
    }
}

/// What the devices of one RUN add to it.
#[derive(Debug, Default)]
pub struct Applied {
    /// `KEY=value`, after the RUN's own.
    pub env: Vec<String>,
    /// Host device nodes.
    pub devices: Vec<runner::DeviceNode>,
    /// Bind mounts of host paths.
    pub mounts: Vec<runner::MountSpec>,
}

/// Resolves the devices of a RUN in the specs of [`spec_dirs`], checks they are allowed
/// (`allow_device`: the build's `--allow device`; or the autoallow annotation), and gathers their
/// edits. A device no spec has fails the RUN when required; otherwise it is left out with a
/// warning, as BuildKit does.
pub fn apply(devices: &[graph::Device], allow_device: bool) -> Result<Applied, String> {
    let mut out = Applied::default();
    if devices.is_empty() {
        return Ok(out);
    }
    let registry = Registry::load(&spec_dirs()).map_err(|e| e.to_string())?;
    for d in devices {
        let found = registry.resolve(&d.name).map_err(|e| e.to_string())?;
        if found.is_empty() {
            if d.required {
                return Err(format!(
                    "RUN --device={}: required device not found in the CDI specs ({})",
                    d.name,
                    spec_dirs()
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            tracing::warn!(
                "RUN --device={}: device not found in the CDI specs, running without it",
                d.name
            );
            continue;
        }
        for f in found {
            if !allow_device && !f.autoallow {
                return Err(format!(
                    "device {} is requested by the build but not allowed: build with --allow device",
                    f.name
                ));
            }
            for e in f.edits {
                out.env.extend(e.env);
                out.devices
                    .extend(e.device_nodes.into_iter().map(|n| runner::DeviceNode {
                        host: PathBuf::from(n.host_path.as_deref().unwrap_or(&n.path)),
                        path: n.path,
                    }));
                out.mounts
                    .extend(e.mounts.into_iter().map(|m| runner::MountSpec::Bind {
                        readonly: m.options.iter().any(|o| o == "ro"),
                        source: m.host_path.into(),
                        target: m.container_path,
                    }));
            }
        }
    }
    Ok(out)
}

/// `vendor.com/class`: a vendor with a dot, a class, both of `[A-Za-z0-9_.-]`.
fn valid_kind(kind: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    matches!(kind.split_once('/'), Some((v, c)) if ok(v) && ok(c) && v.contains('.'))
}

/// An annotation that says yes: YAML `true` or the string `"true"`.
fn truthy(v: Option<&serde_json::Value>) -> bool {
    match v {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

fn read_spec(path: &Path) -> Result<SpecFile, CdiError> {
    let text = fs_err::read_to_string(path).map_err(|source| CdiError::Read {
        path: path.into(),
        source,
    })?;
    parse_spec(path, &text)
}

/// Parses one spec: JSON for `*.json`, YAML otherwise.
pub fn parse_spec(path: &Path, text: &str) -> Result<SpecFile, CdiError> {
    let invalid = |msg: String| CdiError::Invalid {
        path: path.into(),
        msg,
    };
    let spec: SpecFile = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?
    } else {
        serde_saphyr::from_str(text).map_err(|e| invalid(e.to_string()))?
    };
    if !valid_kind(&spec.kind) {
        return Err(invalid(format!(
            "kind {:?} is not vendor.com/class",
            spec.kind
        )));
    }
    for d in &spec.devices {
        for n in &d.container_edits.device_nodes {
            if !n.path.starts_with('/') {
                return Err(invalid(format!(
                    "device node path {:?} is not absolute",
                    n.path
                )));
            }
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
cdiVersion: "0.6.0"
kind: "vendor1.com/device"
containerEdits:
  env:
  - ALL=1
devices:
- name: foo
  containerEdits:
    env:
    - FOO=injected
    deviceNodes:
    - path: /dev/mydev
      hostPath: /dev/zero
    mounts:
    - hostPath: /etc/hostname
      containerPath: /opt/hostname
      options: [ro, bind]
- name: bar
  annotations:
    org.mobyproject.buildkit.device.autoallow: true
  containerEdits:
    env: [BAR=1]
"#;

    fn registry() -> Registry {
        let json = r#"{"cdiVersion":"0.6.0","kind":"other.io/gpu",
            "annotations":{"org.mobyproject.buildkit.device.autoallow":"true"},
            "devices":[{"name":"0","containerEdits":{"env":["GPU=0"]}}]}"#;
        Registry {
            specs: vec![
                parse_spec(Path::new("a.yaml"), YAML).unwrap(),
                parse_spec(Path::new("b.json"), json).unwrap(),
            ],
        }
    }

    #[test]
    fn yaml_and_json_specs_parse() {
        let r = registry();
        let foo = &r.resolve("vendor1.com/device=foo").unwrap()[0];
        assert_eq!(foo.name, "vendor1.com/device=foo");
        assert!(!foo.autoallow);
        assert_eq!(foo.edits[0].env, ["ALL=1"]);
        assert_eq!(foo.edits[1].env, ["FOO=injected"]);
        assert_eq!(
            foo.edits[1].device_nodes[0].host_path.as_deref(),
            Some("/dev/zero")
        );
        assert_eq!(foo.edits[1].mounts[0].options, ["ro", "bind"]);
        assert!(r.resolve("other.io/gpu=0").unwrap()[0].autoallow);
    }

    #[test]
    fn names_select_one_all_or_the_first() {
        let r = registry();
        let names = |n: &str| -> Vec<String> {
            r.resolve(n).unwrap().into_iter().map(|f| f.name).collect()
        };
        assert_eq!(names("vendor1.com/device"), ["vendor1.com/device=foo"]);
        assert_eq!(
            names("vendor1.com/device=*"),
            ["vendor1.com/device=foo", "vendor1.com/device=bar"]
        );
        assert!(r.resolve("vendor1.com/device=bar").unwrap()[0].autoallow);
        assert!(names("vendor1.com/device=nope").is_empty());
        assert!(matches!(r.resolve("nodomain/x=y"), Err(CdiError::Name(_))));
        assert!(matches!(r.resolve("a.com/x="), Err(CdiError::Name(_))));
    }

    #[test]
    fn hooks_are_refused_naming_the_device() {
        let y = "kind: v.com/c\ndevices:\n- name: h\n  containerEdits:\n    hooks:\n    - hookName: createContainer\n      path: /usr/bin/hook\n";
        let r = Registry {
            specs: vec![parse_spec(Path::new("h.yaml"), y).unwrap()],
        };
        let e = r.resolve("v.com/c=h").unwrap_err().to_string();
        assert!(
            e.contains("v.com/c=h") && e.contains("/usr/bin/hook"),
            "{e}"
        );
    }

    #[test]
    fn bad_specs_name_the_file() {
        let e = parse_spec(Path::new("/etc/cdi/x.yaml"), "kind: nokind\ndevices: []\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/cdi/x.yaml") && e.contains("nokind"), "{e}");
        let e = parse_spec(Path::new("y.json"), "{")
            .unwrap_err()
            .to_string();
        assert!(e.contains("y.json"), "{e}");
    }
}
