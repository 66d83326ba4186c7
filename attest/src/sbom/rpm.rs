//! RPM packages (Fedora, RHEL 9, Rocky, Alma, openSUSE): `/var/lib/rpm/rpmdb.sqlite` (rpm ≥ 4.16's
//! default database; the Berkeley DB and NDB formats of older releases are not read). Each row of its
//! `Packages` table is a header blob: big-endian index count and data length, then 16-byte index
//! entries (tag, type, offset, count), then the data store; strings are NUL-terminated.

use super::{purl_encode, tree::OsRelease, Ecosystem, Package, Tree};

const DB: &str = "/var/lib/rpm/rpmdb.sqlite";
const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_LICENSE: u32 = 1014;
const TAG_ARCH: u32 = 1022;
const TAG_SOURCERPM: u32 = 1044;
const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_I18NSTRING: u32 = 9;

pub(crate) fn scan(tree: &dyn Tree, os: &OsRelease) -> Result<Vec<Package>, crate::Error> {
    let Some(bytes) = tree.read(DB)? else {
        return Ok(Vec::new());
    };
    // SQLite reads files only: a private copy, opened immutable (no -wal/-shm beside it).
    let blobs = match tempfile::NamedTempFile::new()
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes).map(|()| f))
        .map_err(|e| e.to_string())
        .and_then(|f| blobs(f.path()).map_err(|e| e.to_string()))
    {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(path = DB, error = %e, "rpm database not readable; skipped");
            return Ok(Vec::new());
        }
    };
    Ok(blobs.iter().filter_map(|b| header_package(b, os)).collect())
}

fn blobs(path: &std::path::Path) -> rusqlite::Result<Vec<Vec<u8>>> {
    use rusqlite::OpenFlags;
    let uri = format!("file:{}?immutable=1", path.display());
    let db = rusqlite::Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )?;
    let mut stmt = db.prepare("SELECT blob FROM Packages")?;
    let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
    rows.collect()
}

/// A header tag's value: a string, or the first number of an INT32 array.
#[derive(Debug, PartialEq)]
enum Value {
    Str(String),
    Int(u32),
}

/// The values of the tags wanted, from one header blob; `None` when the blob is malformed.
fn header_tags(blob: &[u8], wanted: &[u32]) -> Option<Vec<(u32, Value)>> {
    let be = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(blob.get(at..at + 4)?.try_into().ok()?))
    };
    let il = usize::try_from(be(0)?).ok()?;
    let dl = usize::try_from(be(4)?).ok()?;
    let store_at = 8usize.checked_add(il.checked_mul(16)?)?;
    let store = blob.get(store_at..store_at.checked_add(dl)?)?;
    let mut out = Vec::new();
    for i in 0..il {
        let e = 8 + i * 16;
        let (tag, kind, off) = (be(e)?, be(e + 4)?, usize::try_from(be(e + 8)?).ok()?);
        if !wanted.contains(&tag) {
            continue;
        }
        let data = store.get(off..)?;
        let v = match kind {
            TYPE_STRING | TYPE_I18NSTRING => {
                let end = data.iter().position(|&b| b == 0)?;
                Value::Str(String::from_utf8_lossy(&data[..end]).into_owned())
            }
            TYPE_INT32 => Value::Int(u32::from_be_bytes(data.get(..4)?.try_into().ok()?)),
            _ => continue,
        };
        out.push((tag, v));
    }
    Some(out)
}

fn header_package(blob: &[u8], os: &OsRelease) -> Option<Package> {
    let tags = header_tags(
        blob,
        &[
            TAG_NAME,
            TAG_VERSION,
            TAG_RELEASE,
            TAG_EPOCH,
            TAG_LICENSE,
            TAG_ARCH,
            TAG_SOURCERPM,
        ],
    )?;
    let s = |t: u32| {
        tags.iter().find_map(|(k, v)| match v {
            Value::Str(s) if *k == t => Some(s.clone()),
            _ => None,
        })
    };
    let name = s(TAG_NAME)?;
    // gpg-pubkey entries are imported signing keys, not packages.
    if name == "gpg-pubkey" {
        return None;
    }
    let epoch = tags.iter().find_map(|(k, v)| match v {
        Value::Int(n) if *k == TAG_EPOCH => Some(*n),
        _ => None,
    });
    let vr = format!("{}-{}", s(TAG_VERSION)?, s(TAG_RELEASE)?);
    let version = match epoch {
        Some(e) => format!("{e}:{vr}"),
        None => vr.clone(),
    };
    let arch = s(TAG_ARCH);
    let vendor = os.id.clone().unwrap_or_else(|| "redhat".to_owned());
    let mut qualifiers = Vec::new();
    if let Some(a) = &arch {
        qualifiers.push(format!("arch={}", purl_encode(a)));
    }
    if let Some(e) = epoch {
        qualifiers.push(format!("epoch={e}"));
    }
    if let (Some(id), Some(v)) = (&os.id, &os.version_id) {
        qualifiers.push(format!("distro={}", purl_encode(&format!("{id}-{v}"))));
    }
    let mut purl = format!(
        "pkg:rpm/{}/{}@{}",
        purl_encode(&vendor),
        purl_encode(&name),
        purl_encode(&vr)
    );
    if !qualifiers.is_empty() {
        purl.push('?');
        purl.push_str(&qualifiers.join("&"));
    }
    Some(Package {
        ecosystem: Ecosystem::Rpm,
        source: s(TAG_SOURCERPM)
            .and_then(|src| source_name(&src))
            .filter(|src| *src != name),
        licenses: s(TAG_LICENSE).into_iter().collect(),
        name,
        version,
        arch,
        purl,
        found_in: DB.to_owned(),
    })
}

/// The source package's name of a `SOURCERPM` value (`glibc-2.34-100.el9.src.rpm` → `glibc`).
fn source_name(src: &str) -> Option<String> {
    let base = src
        .strip_suffix(".src.rpm")
        .or(src.strip_suffix(".nosrc.rpm"))?;
    let mut parts = base.rsplitn(3, '-');
    let (_release, _version, name) = (parts.next()?, parts.next()?, parts.next()?);
    Some(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A real rpmdb.sqlite: rpmbuild makes a package, rpm records it in an empty database
    /// (`rpm` is installed by install-deps.sh).
    #[test]
    fn rpm_packages_from_a_real_rpmdb_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path();
        fs_err::create_dir_all(top.join("SPECS")).unwrap();
        fs_err::write(
            top.join("SPECS/hello.spec"),
            "Name: hello-rb\nVersion: 1.2.3\nRelease: 4.el9\nEpoch: 2\nSummary: t\n\
             License: MIT and GPL-2.0-or-later\nBuildArch: noarch\n%description\nt\n%files\n",
        )
        .unwrap();
        let run = |args: &[&str]| {
            let out = Command::new(args[0])
                .args(&args[1..])
                .output()
                .expect("rpm is installed by install-deps.sh");
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let define = format!("_topdir {}", top.display());
        run(&[
            "rpmbuild",
            "--define",
            &define,
            "-bb",
            top.join("SPECS/hello.spec").to_str().unwrap(),
        ]);
        let root = top.join("root");
        let db = root.join("var/lib/rpm");
        fs_err::create_dir_all(&db).unwrap();
        let dbpath = db.to_str().unwrap();
        run(&["rpm", "--dbpath", dbpath, "--initdb"]);
        let rpm = top.join("RPMS/noarch/hello-rb-1.2.3-4.el9.noarch.rpm");
        run(&[
            "rpm",
            "--dbpath",
            dbpath,
            "-i",
            "--nodeps",
            "--justdb",
            rpm.to_str().unwrap(),
        ]);
        let tree = super::super::LayerTree::new(vec![root.clone()]);
        let os = OsRelease {
            id: Some("rocky".into()),
            version_id: Some("9.3".into()),
        };
        let found = scan(&tree, &os).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        let p = &found[0];
        assert_eq!(p.name, "hello-rb");
        assert_eq!(p.version, "2:1.2.3-4.el9");
        assert_eq!(p.arch.as_deref(), Some("noarch"));
        assert_eq!(p.licenses, ["MIT and GPL-2.0-or-later"]);
        assert_eq!(
            p.purl,
            "pkg:rpm/rocky/hello-rb@1.2.3-4.el9?arch=noarch&epoch=2&distro=rocky-9.3"
        );
        assert_eq!(p.source, None);
        assert_eq!(
            source_name("glibc-2.34-100.el9.src.rpm").as_deref(),
            Some("glibc")
        );
        // A truncated blob is skipped, not a panic.
        assert_eq!(header_tags(&[0, 0, 0, 9, 0, 0, 1, 0], &[TAG_NAME]), None);
    }
}
