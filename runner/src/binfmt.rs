//! binfmt_misc: which foreign architectures the kernel can run (through qemu-user), and registering
//! Debian's `qemu-user-static` interpreters for them, as `tonistiigi/binfmt --install` does for docker.
//!
//! A handler registered with the `F` (fix-binary) flag has its interpreter opened by the kernel at
//! registration, so a RUN in the sandbox needs no interpreter inside its rootfs.

use std::path::{Path, PathBuf};

/// Where the kernel's binfmt_misc file system is mounted.
pub const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// A binfmt_misc failure.
#[derive(Debug, thiserror::Error)]
pub enum BinfmtError {
    #[error("failed to read binfmt_misc handler {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to mount binfmt_misc on {path}")]
    Mount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to register the {arch} handler {name} (writing {path})")]
    Register {
        arch: String,
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no emulator for {arch}: {interpreter} not found (install Debian's qemu-user-static)")]
    NoInterpreter { arch: String, interpreter: PathBuf },
    #[error("unknown architecture {0:?} (known: {known})", known = KNOWN.iter().map(|a| a.oci).collect::<Vec<_>>().join(", "))]
    UnknownArch(String),
}

/// One architecture: its OCI and qemu names and what its ELF executables start with.
struct Arch {
    oci: &'static str,
    qemu: &'static str,
    /// `EI_CLASS`: 1 for 32-bit, 2 for 64-bit.
    class: u8,
    big_endian: bool,
    machine: u16,
}

const KNOWN: &[Arch] = &[
    Arch {
        oci: "amd64",
        qemu: "x86_64",
        class: 2,
        big_endian: false,
        machine: 0x3e,
    },
    Arch {
        oci: "arm64",
        qemu: "aarch64",
        class: 2,
        big_endian: false,
        machine: 0xb7,
    },
    Arch {
        oci: "arm",
        qemu: "arm",
        class: 1,
        big_endian: false,
        machine: 0x28,
    },
    Arch {
        oci: "386",
        qemu: "i386",
        class: 1,
        big_endian: false,
        machine: 0x03,
    },
    Arch {
        oci: "ppc64le",
        qemu: "ppc64le",
        class: 2,
        big_endian: false,
        machine: 0x15,
    },
    Arch {
        oci: "s390x",
        qemu: "s390x",
        class: 2,
        big_endian: true,
        machine: 0x16,
    },
    Arch {
        oci: "riscv64",
        qemu: "riscv64",
        class: 2,
        big_endian: false,
        machine: 0xf3,
    },
    Arch {
        oci: "mips64le",
        qemu: "mips64el",
        class: 2,
        big_endian: false,
        machine: 0x08,
    },
    Arch {
        oci: "loong64",
        qemu: "loongarch64",
        class: 2,
        big_endian: false,
        machine: 0x102,
    },
];

fn arch(name: &str) -> Result<&'static Arch, BinfmtError> {
    KNOWN
        .iter()
        .find(|a| a.oci == name || a.qemu == name)
        .ok_or_else(|| BinfmtError::UnknownArch(name.to_owned()))
}

/// The OCI names of the architectures this module knows.
pub fn known_architectures() -> Vec<&'static str> {
    KNOWN.iter().map(|a| a.oci).collect()
}

impl Arch {
    /// The first 20 bytes of an ELF executable for this architecture (`ET_EXEC`).
    fn elf_header(&self) -> [u8; 20] {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = self.class;
        h[5] = if self.big_endian { 2 } else { 1 };
        h[6] = 1;
        let (t, m) = if self.big_endian {
            (2u16.to_be_bytes(), self.machine.to_be_bytes())
        } else {
            (2u16.to_le_bytes(), self.machine.to_le_bytes())
        };
        h[16..18].copy_from_slice(&t);
        h[18..20].copy_from_slice(&m);
        h
    }

    /// qemu's mask for that header: any OS ABI, `ET_EXEC` or `ET_DYN`.
    fn elf_mask(&self) -> [u8; 20] {
        let mut m = [0xffu8; 20];
        m[7] = 0;
        m[if self.big_endian { 17 } else { 16 }] = 0xfe;
        m
    }
}

/// A registered binfmt_misc handler, as `/proc/sys/fs/binfmt_misc/NAME` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    pub name: String,
    pub enabled: bool,
    pub interpreter: String,
    pub flags: String,
    offset: usize,
    magic: Vec<u8>,
    mask: Vec<u8>,
}

impl Handler {
    /// Parses the text of a handler's file; `None` for an extension (`E`) handler.
    fn parse(name: &str, text: &str) -> Option<Handler> {
        let mut h = Handler {
            name: name.to_owned(),
            enabled: false,
            interpreter: String::new(),
            flags: String::new(),
            offset: 0,
            magic: Vec::new(),
            mask: Vec::new(),
        };
        for line in text.lines() {
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            match k {
                "enabled" => h.enabled = true,
                "interpreter" => h.interpreter = v.to_owned(),
                "flags:" => h.flags = v.trim().to_owned(),
                "offset" => h.offset = v.trim().parse().ok()?,
                "magic" => h.magic = hex(v.trim())?,
                "mask" => h.mask = hex(v.trim())?,
                _ => {}
            }
        }
        (!h.magic.is_empty()).then_some(h)
    }

    /// Whether this handler runs executables that start with `header`.
    fn matches(&self, header: &[u8]) -> bool {
        self.magic.iter().enumerate().all(|(i, m)| {
            let mask = self.mask.get(i).copied().unwrap_or(0xff);
            header.get(self.offset + i).is_some_and(|b| b & mask == *m)
        })
    }

    /// The architecture (OCI name) this handler runs, if it is one of the known ones.
    pub fn architecture(&self) -> Option<&'static str> {
        KNOWN
            .iter()
            .find(|a| self.matches(&a.elf_header()))
            .map(|a| a.oci)
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The handlers registered in `dir` (normally [`BINFMT_DIR`]); none when binfmt_misc is not mounted.
pub fn handlers(dir: &Path) -> Result<Vec<Handler>, BinfmtError> {
    let entries = match fs_err::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(BinfmtError::Read {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "register" || name == "status" {
            continue;
        }
        let text = fs_err::read_to_string(entry.path()).map_err(|source| BinfmtError::Read {
            path: entry.path(),
            source,
        })?;
        out.extend(Handler::parse(&name, &text));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Whether the host runs `arch` (OCI name) executables without emulation.
pub fn runs_natively(arch: &str) -> bool {
    let host = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    arch == host || (host == "amd64" && arch == "386") || (host == "arm64" && arch == "arm")
}

/// The enabled handler in `handlers` that runs `arch` executables.
pub fn handler_for<'a>(handlers: &'a [Handler], arch_name: &str) -> Option<&'a Handler> {
    let header = arch(arch_name).ok()?.elf_header();
    handlers.iter().find(|h| h.enabled && h.matches(&header))
}

/// The first of `runs` (an architecture, OCI name, with what names it, e.g. the RUN's Dockerfile span)
/// the host neither runs natively nor emulates through an enabled handler in `dir`; the handlers are
/// read only when some architecture needs one.
pub fn first_unemulated<T>(
    dir: &Path,
    runs: impl IntoIterator<Item = (String, T)>,
) -> Result<Option<(String, T)>, BinfmtError> {
    let mut registered = None;
    for (arch, at) in runs {
        if runs_natively(&arch) {
            continue;
        }
        let known = match &registered {
            Some(h) => h,
            None => registered.insert(handlers(dir)?),
        };
        if handler_for(known, &arch).is_none() {
            return Ok(Some((arch, at)));
        }
    }
    Ok(None)
}

/// What a build says when a RUN for `platform` (architecture `arch`) has no handler in `dir`: the
/// error and the fix.
pub fn missing_handler(platform: &str, arch: &str, dir: &Path) -> (String, String) {
    (
        format!(
            "RUN for {platform} needs emulation, and no binfmt_misc handler for {arch} is \
             registered in {}",
            dir.display()
        ),
        format!(
            "run `rbuild binfmt --install {arch}` as root (it registers Debian's \
             qemu-user-static; docs/MULTIPLATFORM.md), or build without --platform {platform}"
        ),
    )
}

/// `rbuild binfmt`'s listing: one line per handler (name, architecture, state, flags, interpreter), then
/// the architectures run natively and those emulated.
pub fn describe(handlers: &[Handler]) -> String {
    let mut out = String::new();
    let mut emulated: Vec<&str> = Vec::new();
    for h in handlers {
        let arch = h.architecture().unwrap_or("-");
        let state = if h.enabled { "enabled" } else { "disabled" };
        out.push_str(&format!(
            "{:<20} {arch:<8} {state:<9} flags={:<4} {}\n",
            h.name, h.flags, h.interpreter
        ));
        if h.enabled && arch != "-" && !emulated.contains(&arch) {
            emulated.push(arch);
        }
    }
    let native: Vec<&str> = KNOWN
        .iter()
        .map(|a| a.oci)
        .filter(|a| runs_natively(a))
        .collect();
    out.push_str(&format!("native: {}\n", native.join(" ")));
    let emulated = if emulated.is_empty() {
        "none".to_owned()
    } else {
        emulated.join(" ")
    };
    out.push_str(&format!("emulated: {emulated}\n"));
    out
}

/// What `register` did for one architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// A new handler, named `qemu-<arch>`, with its interpreter.
    Added { name: String, interpreter: PathBuf },
    /// An enabled handler for it was already there.
    Present { name: String },
}

/// Registers Debian's `/usr/bin/qemu-<arch>-static` for `arch` in `dir` with the `F` flag (the kernel opens
/// the interpreter now, so sandboxes need none inside), mounting binfmt_misc first when needed.
pub fn register(dir: &Path, arch_name: &str) -> Result<Registered, BinfmtError> {
    let a = arch(arch_name)?;
    mount(dir)?;
    if let Some(h) = handler_for(&handlers(dir)?, a.oci) {
        return Ok(Registered::Present {
            name: h.name.clone(),
        });
    }
    let interpreter = PathBuf::from(format!("/usr/bin/qemu-{}-static", a.qemu));
    if !interpreter.exists() {
        return Err(BinfmtError::NoInterpreter {
            arch: a.oci.to_owned(),
            interpreter,
        });
    }
    let esc = |b: &[u8]| b.iter().map(|b| format!("\\x{b:02x}")).collect::<String>();
    let name = format!("qemu-{}", a.qemu);
    let line = format!(
        ":{name}:M:0:{}:{}:{}:F",
        esc(&a.elf_header()),
        esc(&a.elf_mask()),
        interpreter.display()
    );
    let path = dir.join("register");
    fs_err::write(&path, line).map_err(|source| BinfmtError::Register {
        arch: a.oci.to_owned(),
        name: name.clone(),
        path,
        source,
    })?;
    Ok(Registered::Added { name, interpreter })
}

/// Mounts binfmt_misc on `dir` unless it already is (its `register` file exists).
fn mount(dir: &Path) -> Result<(), BinfmtError> {
    if dir.join("register").exists() {
        return Ok(());
    }
    rustix::mount::mount(
        "binfmt_misc",
        dir,
        "binfmt_misc",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .map_err(|e| BinfmtError::Mount {
        path: dir.to_owned(),
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text of Debian's qemu-aarch64 handler as the kernel shows it once registered.
    const AARCH64: &str = "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: F\noffset 0\n\
        magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";

    #[test]
    fn the_first_unemulated_run_is_found_and_native_ones_read_no_handlers() {
        let dir = tempfile::tempdir().unwrap();
        let host = if cfg!(target_arch = "aarch64") {
            "arm64"
        } else {
            "amd64"
        };
        let missing = dir.path().join("not-mounted");
        // Native architectures never read the handlers (a broken dir would fail).
        fs_err::write(dir.path().join("x"), "a file, not a directory").unwrap();
        let native = vec![(host.to_owned(), 1)];
        assert_eq!(
            first_unemulated(&dir.path().join("x"), native).unwrap(),
            None
        );
        fs_err::write(dir.path().join("qemu-aarch64"), AARCH64).unwrap();
        let runs = || {
            vec![
                (host.to_owned(), 1),
                ("arm64".to_owned(), 2),
                ("s390x".to_owned(), 3),
            ]
        };
        // With the aarch64 handler registered, s390x is the first missing one on either host.
        let found = first_unemulated(dir.path(), runs()).unwrap();
        assert_eq!(found, Some(("s390x".to_owned(), 3)));
        assert_eq!(
            first_unemulated(&missing, runs()).unwrap(),
            Some(if host == "arm64" {
                ("s390x".to_owned(), 3)
            } else {
                ("arm64".to_owned(), 2)
            })
        );
        let (message, help) = missing_handler("linux/s390x", "s390x", dir.path());
        assert!(
            message.contains("no binfmt_misc handler for s390x"),
            "{message}"
        );
        assert!(help.contains("rbuild binfmt --install s390x"), "{help}");
    }

    #[test]
    fn a_registered_qemu_handler_is_recognised_by_its_elf_magic() {
        let h = Handler::parse("whatever-name", AARCH64).unwrap();
        assert_eq!(h.architecture(), Some("arm64"));
        assert_eq!(h.flags, "F");
        assert!(handler_for(std::slice::from_ref(&h), "arm64").is_some());
        assert!(handler_for(std::slice::from_ref(&h), "s390x").is_none());
        let disabled = Handler::parse("x", &AARCH64.replace("enabled\n", "disabled\n")).unwrap();
        assert!(handler_for(&[disabled], "arm64").is_none());
        assert!(Handler::parse(
            "py",
            "enabled\ninterpreter /usr/bin/python3\nflags: \nextension .py\n"
        )
        .is_none());
    }

    #[test]
    fn our_magic_and_mask_are_debians_for_aarch64_and_s390x() {
        let a = arch("arm64").unwrap();
        let m = Handler::parse("x", AARCH64).unwrap();
        assert_eq!(a.elf_header().to_vec(), m.magic);
        assert_eq!(a.elf_mask().to_vec(), m.mask);
        // /usr/lib/binfmt.d/qemu-s390x.conf of bookworm's qemu-user-static (its mask keeps 6 ABI bits)
        let s390x = "enabled\ninterpreter /x\nflags: F\noffset 0\n\
            magic 7f454c4602020100000000000000000000020016\n\
            mask fffffffffffffffcfffffffffffffffffffeffff\n";
        let h = Handler::parse("qemu-s390x", s390x).unwrap();
        assert_eq!(h.architecture(), Some("s390x"));
        assert_eq!(arch("s390x").unwrap().elf_header().to_vec(), h.magic);
        assert_eq!(hex("7f4"), None, "odd length is rejected");
    }
}
