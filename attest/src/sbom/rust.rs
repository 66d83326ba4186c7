//! Rust crates compiled into an executable by `cargo auditable build`: the `.dep-v0` ELF section holds
//! zlib-compressed JSON in the format of rust-secure-code/cargo-auditable's `auditable-serde`
//! (`{"packages": [{"name", "version", "source", "kind"?, "dependencies"?: [index…], "root"?}]}`;
//! `kind` is `runtime` when absent, `dependencies` index into `packages`).
//!
//! As Syft does, only `runtime` crates are listed (build-only crates — proc macros, build scripts'
//! dependencies — are not in the binary); the root crate is the package the file is, and the
//! dependency indices become dependency relationships.

use std::io::Read;

use object::read::elf::{FileHeader, SectionHeader};
use object::ReadCache;
use serde::Deserialize;

use super::evidence::Evidence;
use super::{purl_encode, Ecosystem, Package, ReadSeek};

/// The section cargo-auditable writes.
const SECTION: &[u8] = b".dep-v0";
/// Compressed sections bigger than this are not read (a few KiB in practice).
const MAX_SECTION: u64 = 8 << 20;
/// The JSON may not inflate beyond this (a zlib bomb stops here).
const MAX_JSON: u64 = 64 << 20;

/// The contents of an ELF file's `.dep-v0` section, read through its section headers only.
pub(crate) fn dep_v0(file: &mut dyn ReadSeek) -> Option<Vec<u8>> {
    let cache = ReadCache::new(file);
    match object::FileKind::parse(&cache).ok()? {
        object::FileKind::Elf32 => section::<object::elf::FileHeader32<object::Endianness>>(&cache),
        object::FileKind::Elf64 => section::<object::elf::FileHeader64<object::Endianness>>(&cache),
        _ => None,
    }
}

fn section<Elf: FileHeader<Endian = object::Endianness>>(
    data: &ReadCache<&mut dyn ReadSeek>,
) -> Option<Vec<u8>> {
    let header = Elf::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let sections = header.sections(endian, data).ok()?;
    let (_, s) = sections.section_by_name(endian, SECTION)?;
    let (_, size) = s.file_range(endian)?;
    if size > MAX_SECTION {
        return None;
    }
    Some(s.data(endian, data).ok()?.to_vec())
}

#[derive(Deserialize)]
struct VersionInfo {
    packages: Vec<AuditPackage>,
}

#[derive(Deserialize)]
struct AuditPackage {
    name: String,
    version: String,
    #[serde(default)]
    kind: Kind,
    #[serde(default)]
    dependencies: Vec<usize>,
    #[serde(default)]
    root: bool,
}

#[derive(Deserialize, Default, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Build,
    #[default]
    Runtime,
}

/// Why a `.dep-v0` section could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DepError {
    #[error("not zlib data")]
    Inflate(#[source] std::io::Error),
    #[error("inflates beyond {MAX_JSON} bytes")]
    TooBig,
    #[error("not cargo-auditable JSON")]
    Json(#[source] serde_json::Error),
    #[error("dependency index {0} is out of range")]
    Index(usize),
}

/// The runtime crates of a `.dep-v0` section, the root crate as the owner.
pub(crate) fn from_section(section: &[u8], path: &str) -> Result<Evidence, DepError> {
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(section)
        .take(MAX_JSON + 1)
        .read_to_end(&mut json)
        .map_err(DepError::Inflate)?;
    if json.len() as u64 > MAX_JSON {
        return Err(DepError::TooBig);
    }
    let info: VersionInfo = serde_json::from_slice(&json).map_err(DepError::Json)?;
    // Index in the section → index in the evidence's packages (runtime crates only).
    let mut kept = vec![None; info.packages.len()];
    let mut packages = Vec::new();
    let mut owner = None;
    for (i, p) in info.packages.iter().enumerate() {
        if p.kind != Kind::Runtime {
            continue;
        }
        if p.root {
            owner = Some(packages.len());
        }
        kept[i] = Some(packages.len());
        packages.push(Package {
            ecosystem: Ecosystem::Cargo,
            name: p.name.clone(),
            version: p.version.clone(),
            arch: None,
            source: None,
            licenses: Vec::new(),
            purl: format!(
                "pkg:cargo/{}@{}",
                purl_encode(&p.name),
                purl_encode(&p.version)
            ),
            found_in: path.to_owned(),
        });
    }
    let mut dependencies = Vec::new();
    for (i, p) in info.packages.iter().enumerate() {
        let Some(from) = kept[i] else { continue };
        for &d in &p.dependencies {
            let to = kept.get(d).ok_or(DepError::Index(d))?;
            if let Some(to) = to {
                dependencies.push((from, *to));
            }
        }
    }
    Ok(Evidence {
        packages,
        owner,
        dependencies,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::super::executables::{self, test_elf};
    use super::super::{Inventory, Tree};
    use super::*;

    /// A `.dep-v0` section as cargo-auditable writes it: the JSON, zlib-compressed.
    pub(crate) fn dep_section(json: &str) -> Vec<u8> {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(json.as_bytes()).unwrap();
        z.finish().unwrap()
    }

    const JSON: &str = r#"{"packages":[
        {"name":"hello","version":"0.1.0","source":"local","dependencies":[1,2,3],"root":true},
        {"name":"serde","version":"1.0.200","source":"crates.io","dependencies":[3]},
        {"name":"cc","version":"1.0.90","source":"crates.io","kind":"build"},
        {"name":"itoa","version":"1.0.11","source":"crates.io"}
    ]}"#;

    use super::super::tree::Files;

    #[test]
    fn cargo_auditable_crates_and_dependencies_from_a_synthesized_elf_section() {
        let tree = Files(vec![
            (
                "/usr/local/bin/hello",
                test_elf(".dep-v0", &dep_section(JSON), false),
            ),
            (
                "/usr/local/bin/other",
                test_elf(".text", b"\x90\x90", false),
            ),
            (
                "/usr/local/bin/broken",
                test_elf(".dep-v0", b"not zlib", false),
            ),
        ]);
        let mut inv = Inventory::default();
        let found = executables::scan(&tree, &tree.candidates(), &mut inv).unwrap();
        let purls: Vec<&str> = found.iter().map(|p| p.purl.as_str()).collect();
        // The build-only crate (cc) is not in the binary.
        assert_eq!(
            purls,
            [
                "pkg:cargo/hello@0.1.0",
                "pkg:cargo/serde@1.0.200",
                "pkg:cargo/itoa@1.0.11"
            ]
        );
        assert!(found
            .iter()
            .all(|p| p.ecosystem == Ecosystem::Cargo && p.found_in == "/usr/local/bin/hello"));
        let deps: Vec<(&str, &str)> = inv
            .dependencies
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            deps,
            [
                ("pkg:cargo/hello@0.1.0", "pkg:cargo/itoa@1.0.11"),
                ("pkg:cargo/hello@0.1.0", "pkg:cargo/serde@1.0.200"),
                ("pkg:cargo/serde@1.0.200", "pkg:cargo/itoa@1.0.11"),
            ]
        );
        assert_eq!(inv.files.len(), 1);
        assert_eq!(inv.files[0].owner.as_deref(), Some("pkg:cargo/hello@0.1.0"));
        assert_eq!(inv.files[0].sha256, crate::format::sha256_hex(&tree.0[0].1));
    }

    #[test]
    fn cargo_auditable_bad_sections_are_errors_not_panics() {
        assert!(matches!(
            from_section(b"junk", "/x"),
            Err(DepError::Inflate(_))
        ));
        assert!(matches!(
            from_section(&dep_section("{}"), "/x"),
            Err(DepError::Json(_))
        ));
        let e = from_section(
            &dep_section(
                r#"{"packages":[{"name":"a","version":"1","source":"local","dependencies":[7]}]}"#,
            ),
            "/x",
        );
        assert!(matches!(e, Err(DepError::Index(7))));
        // A section that is not there, and a file that is not ELF.
        let mut plain = std::io::Cursor::new(test_elf(".text", b"", false));
        assert_eq!(dep_v0(&mut plain), None);
        let mut text = std::io::Cursor::new(b"#!/bin/sh\n".to_vec());
        assert_eq!(dep_v0(&mut text), None);
    }

    /// A real linker's ELF file (the host's /bin/true, with its program headers, dozens of sections and
    /// the section headers at the end) with the section added by binutils' objcopy, as cargo-auditable's
    /// linker step would leave it.
    #[test]
    fn cargo_auditable_section_added_to_a_real_binary_by_objcopy() {
        let dir = tempfile::tempdir().unwrap();
        let section = dir.path().join("dep-v0");
        fs_err::write(&section, dep_section(JSON)).unwrap();
        let bin = dir.path().join("hello");
        let status = std::process::Command::new("objcopy")
            .arg("--add-section")
            .arg(format!(".dep-v0={}", section.display()))
            .arg("/bin/true")
            .arg(&bin)
            .status()
            .expect("objcopy (binutils) is installed by scripts/install-deps.sh");
        assert!(status.success());
        let mut f = fs_err::File::open(&bin).unwrap();
        let found = dep_v0(&mut f).expect("the section is found through the section headers");
        assert_eq!(found, dep_section(JSON));
        let e = from_section(&found, "/usr/bin/hello").unwrap();
        assert_eq!(e.packages.len(), 3);
        assert_eq!(e.owner, Some(0));
        let mut plain = fs_err::File::open("/bin/true").unwrap();
        assert_eq!(dep_v0(&mut plain), None);
    }
}
