//! Go modules compiled into executables: the build information the Go linker (1.18 and later) writes
//! into the `.go.buildinfo` section of ELF binaries. The layout followed is the one Go's own
//! `debug/buildinfo` reads: a 32-byte header (`\xff Go buildinf:`, pointer size, flags; flag bit 2 =
//! strings inline), then two strings each prefixed by its unsigned varint length: the Go version and
//! the module information (`path`, `mod`, `dep` and `=>` lines, tab-separated), the latter wrapped in
//! 16-byte sentinels. Older binaries (pointer-based header) are skipped.

use object::{Object, ObjectSection};

use super::evidence::Evidence;
use super::{purl_encode, Ecosystem, Package};

/// The buildinfo header's magic.
const MAGIC: &[u8] = b"\xff Go buildinf:";
/// Flag bit of the header: the version and module strings follow the header inline (Go 1.18+).
const FLAG_INLINE: u8 = 2;

/// The Go linker's build-ID note (`.note.go.buildid`: name size 4, type 4, name `Go\0\0`), which it
/// places in the first page of every ELF file it writes (unless linked with an empty `-buildid=`).
const GO_NOTE: &[u8] = b"\x04\0\0\0Go\0\0";

/// Whether the first bytes (4 KiB) of a file are those of an ELF file with the Go build-ID note.
pub(crate) fn is_go_elf(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF") && head.windows(GO_NOTE.len()).any(|w| w == GO_NOTE)
}

/// The Go packages of a Go ELF executable, its main module as the owner.
pub(crate) fn from_elf(bytes: &[u8], path: &str) -> Option<Evidence> {
    let section = buildinfo_section(bytes)?;
    let Some((go, modinfo)) = parse_buildinfo(&section) else {
        tracing::debug!(path, "Go build info not in the Go 1.18+ layout");
        return None;
    };
    let has_main = modinfo.lines().any(|l| l.starts_with("mod\t"));
    Some(Evidence {
        packages: packages(&go, &modinfo, path),
        owner: has_main.then_some(0),
        dependencies: Vec::new(),
    })
}

/// The contents of an ELF file's `.go.buildinfo` section, when it has one.
fn buildinfo_section(elf: &[u8]) -> Option<Vec<u8>> {
    let file = object::File::parse(elf).ok()?;
    let section = file.section_by_name(".go.buildinfo")?;
    Some(section.data().ok()?.to_vec())
}

/// The Go version and the module information text of a `.go.buildinfo` section.
fn parse_buildinfo(data: &[u8]) -> Option<(String, String)> {
    if data.len() < 32 || !data.starts_with(MAGIC) || data[15] & FLAG_INLINE == 0 {
        return None;
    }
    let mut rest = &data[32..];
    let go = read_string(&mut rest)?;
    let mut modinfo = read_string(&mut rest)?;
    // The module text is wrapped in two 16-byte sentinels (the last one after a newline).
    if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        modinfo = &modinfo[16..modinfo.len() - 16];
    }
    Some((
        String::from_utf8_lossy(go).into_owned(),
        String::from_utf8_lossy(modinfo).into_owned(),
    ))
}

/// A string prefixed by its unsigned LEB128 length.
fn read_string<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let mut len: u64 = 0;
    let mut shift = 0;
    loop {
        let (&b, tail) = rest.split_first()?;
        *rest = tail;
        len |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let len = usize::try_from(len).ok()?;
    if len > rest.len() {
        return None;
    }
    let (s, tail) = rest.split_at(len);
    *rest = tail;
    Some(s)
}

/// The main module (first, when the binary was built in module mode), its dependencies (a `=>` replacement with a version takes the place of the line
/// before it) and the Go standard library (`stdlib`, as Syft names it).
fn packages(go: &str, modinfo: &str, path: &str) -> Vec<Package> {
    let mut modules: Vec<(String, String)> = Vec::new();
    for line in modinfo.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["mod" | "dep", module, version, ..] => {
                modules.push(((*module).to_owned(), (*version).to_owned()));
            }
            ["=>", module, version, ..] if !version.is_empty() => {
                if let Some(last) = modules.last_mut() {
                    *last = ((*module).to_owned(), (*version).to_owned());
                }
            }
            _ => {}
        }
    }
    let mut out: Vec<Package> = modules
        .into_iter()
        .map(|(m, v)| package(&m, &v, path))
        .collect();
    if let Some(v) = go.strip_prefix("go") {
        // `go1.19.8` (possibly followed by experiment tags after a space).
        let v = v.split_whitespace().next().unwrap_or(v);
        let mut p = package("stdlib", &format!("go{v}"), path);
        p.purl = format!("pkg:golang/stdlib@{}", purl_encode(v));
        out.push(p);
    }
    out
}

fn package(module: &str, version: &str, path: &str) -> Package {
    let segments: Vec<String> = module.split('/').map(purl_encode).collect();
    Package {
        ecosystem: Ecosystem::Go,
        name: module.to_owned(),
        version: version.to_owned(),
        arch: None,
        source: None,
        licenses: Vec::new(),
        purl: format!("pkg:golang/{}@{}", segments.join("/"), purl_encode(version)),
        found_in: path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::executables::test_elf;
    use super::super::Tree;
    use super::*;

    /// A `.go.buildinfo` section in the Go 1.18+ layout, built from its parts.
    fn section(go: &str, modinfo: &str) -> Vec<u8> {
        let mut s = MAGIC.to_vec();
        s.push(8); // pointer size
        s.push(FLAG_INLINE);
        s.resize(32, 0);
        for part in [go.as_bytes().to_vec(), wrap(modinfo)] {
            let mut n = part.len();
            loop {
                let b = (n & 0x7f) as u8;
                n >>= 7;
                s.push(if n == 0 { b } else { b | 0x80 });
                if n == 0 {
                    break;
                }
            }
            s.extend_from_slice(&part);
        }
        s
    }

    /// The module text between the 16-byte sentinels Go puts around it.
    fn wrap(modinfo: &str) -> Vec<u8> {
        let mut v = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6".to_vec();
        v.extend_from_slice(modinfo.as_bytes());
        v.extend_from_slice(b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2");
        v
    }

    use super::super::tree::Files;

    #[test]
    fn go_build_info_modules_from_a_synthesized_elf_section() {
        let modinfo = "path\texample.com/app/cmd/app\n\
            mod\texample.com/app\tv1.2.3\th1:abc=\n\
            dep\tgithub.com/spf13/cobra\tv1.8.0\th1:def=\n\
            dep\tgolang.org/x/sys\tv0.1.0\th1:ghi=\n\
            =>\tgolang.org/x/sys\tv0.2.0\th1:jkl=\n\
            dep\texample.com/local\tv0.0.0\n\
            =>\t../local\t\t\n\
            build\t-compiler=gc\n";
        let tree = Files(vec![
            (
                "/usr/local/bin/app",
                test_elf(".go.buildinfo", &section("go1.21.5", modinfo), true),
            ),
            ("/usr/local/bin/script", b"#!/bin/sh\n".to_vec()),
            (
                "/usr/bin/not-go",
                b"\x7fELF\x02\x01\x01 and no Go note".to_vec(),
            ),
            (
                "/usr/local/bin/plain-elf",
                test_elf(".go.buildinfo", b"not build info", true),
            ),
        ]);
        let mut inv = super::super::Inventory::default();
        let found = super::super::executables::scan(&tree, &tree.candidates(), &mut inv).unwrap();
        let purls: Vec<&str> = found.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(
            purls,
            [
                "pkg:golang/example.com/app@v1.2.3",
                "pkg:golang/github.com/spf13/cobra@v1.8.0",
                "pkg:golang/golang.org/x/sys@v0.2.0",
                "pkg:golang/example.com/local@v0.0.0",
                "pkg:golang/stdlib@1.21.5",
            ]
        );
        assert!(found.iter().all(|p| p.found_in == "/usr/local/bin/app"));
        assert_eq!(found[4].version, "go1.21.5");
        // The binary was read whole: it is listed, hashed, as the main module's file.
        assert_eq!(inv.files.len(), 1, "{:?}", inv.files);
        let f = &inv.files[0];
        assert_eq!(f.path, "/usr/local/bin/app");
        assert_eq!(
            f.owner.as_deref(),
            Some("pkg:golang/example.com/app@v1.2.3")
        );
        assert_eq!(f.evidence.len(), 4);
        let bytes = &tree.0[0].1;
        assert_eq!(f.sha256, crate::format::sha256_hex(bytes));
    }

    #[test]
    fn go_build_info_of_a_pre_1_18_pointer_header_is_skipped() {
        let mut s = section("go1.17", "mod\tx\tv1\n");
        s[15] = 0; // pointer-based strings
        assert_eq!(parse_buildinfo(&s), None);
        assert_eq!(parse_buildinfo(b"\xff Go buildinf:"), None);
    }

    /// umoci is a Go program from Debian that install-deps.sh installs (the integration tests use it).
    /// Debian builds Go in GOPATH mode, so its build info has the Go version but no module lines: the
    /// section lookup, header and string decoding are checked against a real linker's output here, the
    /// module lines by the synthesized test above.
    #[test]
    fn go_build_info_of_the_real_umoci_binary() {
        let bytes = fs_err::read("/usr/bin/umoci").expect("umoci is installed by install-deps.sh");
        assert!(is_go_elf(&bytes[..4096]));
        assert!(!is_go_elf(&fs_err::read("/bin/sh").unwrap()[..4096]));
        let section = buildinfo_section(&bytes).expect("umoci has a .go.buildinfo section");
        let (go, modinfo) = parse_buildinfo(&section).expect("Go 1.18+ layout");
        assert!(go.starts_with("go1."), "{go}");
        let pkgs = packages(&go, &modinfo, "/usr/bin/umoci");
        assert_eq!(pkgs.len(), 1, "{pkgs:?}");
        assert_eq!(pkgs[0].purl, format!("pkg:golang/stdlib@{}", &go[2..]));
    }
}
