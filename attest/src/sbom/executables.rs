//! One pass over the image's executables for the build information compilers embed: Go's
//! `.go.buildinfo` and cargo-auditable's `.dep-v0`. Each executable is opened once and its first 4 KiB
//! read; only ELF files go further: a Go binary (recognised by its build-ID note) is read whole, any
//! other ELF file has its section headers looked up for `.dep-v0` (a few small reads) and is read
//! whole only when it has one. Files read whole are hashed for the SBOM's file list.

use std::io::{Read, SeekFrom};

use super::evidence::Evidence;
use super::{go, rust, FileEntry, Inventory, Package, Tree};

/// How much of an executable is read to decide what it is.
const HEAD: u64 = 4096;

pub(crate) fn scan(
    tree: &dyn Tree,
    candidates: &[String],
    inv: &mut Inventory,
) -> Result<Vec<Package>, crate::Error> {
    use rayon::prelude::*;
    // Files are looked at in parallel (most of the time is opening them and reading their heads);
    // what they hold is then merged in the candidates' order, so documents stay byte-identical.
    // The candidates named as package metadata or archives are for the other scanners.
    let executable = |path: &&String| {
        let name = path.rsplit('/').next().unwrap_or(path);
        !super::names::is_metadata_name(name) && !super::java::is_archive(name)
    };
    let candidates: Vec<&String> = candidates.iter().filter(executable).collect();
    let found = candidates
        .par_iter()
        .map(|path| evidence_of(tree, path))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for (path, (e, bytes)) in candidates
        .iter()
        .zip(found)
        .filter_map(|(p, f)| Some((p, f?)))
    {
        for (from, to) in &e.dependencies {
            inv.dependencies
                .insert((e.packages[*from].purl.clone(), e.packages[*to].purl.clone()));
        }
        inv.files
            .push(FileEntry::new(path, &bytes, &e.packages, e.owner));
        out.extend(e.packages);
    }
    Ok(out)
}

/// The packages an executable's Go build info or cargo-auditable section names, with the file's
/// bytes (for its hashes); `None` for anything else.
fn evidence_of(
    tree: &dyn Tree,
    path: &String,
) -> Result<Option<(Evidence, Vec<u8>)>, crate::Error> {
    let err = |source| crate::Error::Read {
        path: path.clone(),
        source,
    };
    let Some(mut file) = tree.open(path)? else {
        return Ok(None);
    };
    let mut head = Vec::with_capacity(HEAD as usize);
    (&mut file).take(HEAD).read_to_end(&mut head).map_err(err)?;
    if !head.starts_with(b"\x7fELF") {
        return Ok(None);
    }
    let evidence = if go::is_go_elf(&head) {
        let bytes = read_all(&mut file).map_err(err)?;
        go::from_elf(&bytes, path).map(|e| (e, bytes))
    } else {
        match rust::dep_v0(&mut file) {
            Some(section) => match rust::from_section(&section, path) {
                Ok(e) => Some((e, read_all(&mut file).map_err(err)?)),
                Err(e) => {
                    tracing::debug!(path, error = %e, "unreadable cargo-auditable data");
                    None
                }
            },
            None => None,
        }
    };
    Ok(evidence.filter(|(e, _)| !e.packages.is_empty()))
}

/// Whether the file at `host` can hold what this scanner reads: an ELF file with the Go build-ID
/// note in its head, or with a `.dep-v0` section. Unreadable files cannot.
pub(crate) fn has_build_info(host: &std::path::Path) -> bool {
    let Ok(mut file) = std::fs::File::open(host) else {
        return false;
    };
    let mut head = Vec::with_capacity(HEAD as usize);
    if (&mut file).take(HEAD).read_to_end(&mut head).is_err() || !head.starts_with(b"\x7fELF") {
        return false;
    }
    go::is_go_elf(&head) || rust::dep_v0(&mut file).is_some()
}

/// The whole file, from its start.
fn read_all(file: &mut dyn super::ReadSeek) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(0))?;
    let mut bytes = Vec::new();
    file.take(super::names::MAX_EXECUTABLE)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A minimal little-endian ELF64 file whose only section (besides the null one and the section name
/// table) is `name` with `data`; with `go_note`, the bytes of the Go build-ID note follow (not a
/// section of their own: the scanner only looks for them in the first 4 KiB).
#[cfg(test)]
pub(crate) fn test_elf(name: &str, data: &[u8], go_note: bool) -> Vec<u8> {
    let names = format!("\0.shstrtab\0{name}\0");
    let data_off = 64u64;
    let names_off = data_off + data.len() as u64;
    let sh_off = (names_off + names.len() as u64 + 24).next_multiple_of(8);
    let mut f = Vec::new();
    f.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&62u16.to_le_bytes()); // x86-64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&0u64.to_le_bytes()); // entry
    f.extend_from_slice(&0u64.to_le_bytes()); // no program headers
    f.extend_from_slice(&sh_off.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, 0, 64, 3, 1] {
        f.extend_from_slice(&v.to_le_bytes()); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    }
    f.extend_from_slice(data);
    f.extend_from_slice(names.as_bytes());
    if go_note {
        f.extend_from_slice(b"\x04\0\0\0\x08\0\0\0\x04\0\0\0Go\0\0buildid!");
    }
    f.resize(sh_off as usize, 0);
    let header = |f: &mut Vec<u8>, name: u32, kind: u32, off: u64, size: u64| {
        f.extend_from_slice(&name.to_le_bytes());
        f.extend_from_slice(&kind.to_le_bytes());
        f.extend_from_slice(&[0; 16]); // flags, addr
        f.extend_from_slice(&off.to_le_bytes());
        f.extend_from_slice(&size.to_le_bytes());
        f.extend_from_slice(&[0; 8]); // link, info
        f.extend_from_slice(&1u64.to_le_bytes()); // addralign
        f.extend_from_slice(&0u64.to_le_bytes()); // entsize
    };
    header(&mut f, 0, 0, 0, 0);
    header(&mut f, 1, 3, names_off, names.len() as u64); // .shstrtab, SHT_STRTAB
    header(&mut f, 11, 1, data_off, data.len() as u64); // the section, SHT_PROGBITS
    f
}
