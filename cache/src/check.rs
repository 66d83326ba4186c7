//! Verifying the store ([`Store::check`]): blobs hash to their names, tags reach complete images, cache
//! records name blobs that are there, snapshot rows have their directories, and the store is private.
//! With [`Repair::Yes`] whatever is broken is removed (and modes fixed), so that the next build redoes it.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use oci::{Digest, Hasher};
use rusqlite::params;

use crate::{Error, Store, PRIVATE_DIR_MODE};

/// Whether [`Store::check`] removes what is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repair {
    /// Only report.
    No,
    /// Remove corrupt blobs, broken tags and records, snapshot rows without a directory; fix modes.
    Yes,
}

/// What [`Store::check`] found (and, with [`Repair::Yes`], removed or fixed).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Blobs hashed.
    pub blobs: usize,
    /// Tags checked.
    pub tags: usize,
    /// Cache records checked.
    pub records: usize,
    /// Blobs whose content does not hash to their name (or that cannot be read).
    pub corrupt_blobs: Vec<Digest>,
    /// Tags whose manifest, config, a layer or a child manifest is missing or corrupt, with the reason.
    pub broken_tags: Vec<(String, String)>,
    /// Cache records (keys) that name a missing or corrupt blob, or cannot be read.
    pub broken_records: Vec<String>,
    /// Snapshots recorded in the database whose directory is gone.
    pub missing_snapshots: Vec<String>,
    /// Store directories that other users could enter (see [`PRIVATE_DIR_MODE`]), with their mode.
    pub open_dirs: Vec<(PathBuf, u32)>,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.corrupt_blobs.is_empty()
            && self.broken_tags.is_empty()
            && self.broken_records.is_empty()
            && self.missing_snapshots.is_empty()
            && self.open_dirs.is_empty()
    }

    /// One line per problem found, saying whether it was `removed` (with `repair`) or is `broken`.
    pub fn problems(&self, repair: bool) -> Vec<String> {
        let verb = if repair { "removed" } else { "broken" };
        let fixed = if repair { "made private" } else { "open" };
        let mut out = Vec::new();
        out.extend(
            self.corrupt_blobs
                .iter()
                .map(|d| format!("corrupt blob {d} ({verb})")),
        );
        out.extend(
            self.broken_tags
                .iter()
                .map(|(tag, reason)| format!("broken tag {tag}: {reason} ({verb})")),
        );
        out.extend(
            self.broken_records
                .iter()
                .map(|key| format!("broken cache record {key} ({verb})")),
        );
        out.extend(
            self.missing_snapshots
                .iter()
                .map(|s| format!("lost snapshot sha256:{s} ({verb})")),
        );
        out.extend(
            self.open_dirs.iter().map(|(dir, m)| {
                format!("store directory {} has mode {m:o} ({fixed})", dir.display())
            }),
        );
        out
    }

    /// The closing line: what was checked and the verdict.
    pub fn summary(&self, repair: bool) -> String {
        let verdict = if self.is_clean() {
            "all good"
        } else if repair {
            "repaired"
        } else {
            "broken (rbuild check --repair removes it)"
        };
        format!(
            "checked {} blobs, {} tags, {} cache records: {verdict}",
            self.blobs, self.tags, self.records
        )
    }
}

impl Store {
    /// Verifies the store; see the module docs. `record_blobs` says which blobs a cache record's value
    /// needs (the solver owns that format), or `None` for a value it cannot read.
    ///
    /// Every blob is read and hashed: the check takes as long as reading the store once. Safe while
    /// builds run (blobs appear by atomic rename), but a repair racing a build may remove a record that
    /// build is about to use, which then runs its step again.
    pub fn check(
        &self,
        repair: Repair,
        record_blobs: &dyn Fn(&[u8]) -> Option<Vec<Digest>>,
    ) -> Result<CheckReport, Error> {
        let mut report = CheckReport::default();

        for dir in [
            self.root.clone(),
            self.root.join("blobs"),
            self.snapshots.clone(),
            self.mounts.clone(),
            self.root.join("tmp"),
        ] {
            let mode = fs_err::metadata(&dir)?.permissions().mode() & 0o7777;
            if mode != PRIVATE_DIR_MODE {
                if repair == Repair::Yes {
                    fs_err::set_permissions(
                        &dir,
                        std::fs::Permissions::from_mode(PRIVATE_DIR_MODE),
                    )?;
                }
                report.open_dirs.push((dir, mode));
            }
        }

        // Blobs: the name is the content's sha256.
        let mut good: BTreeSet<Digest> = BTreeSet::new();
        for entry in fs_err::read_dir(&self.blobs)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(digest) = format!("sha256:{name}").parse::<Digest>() else {
                continue;
            };
            report.blobs += 1;
            if hash_file(&entry.path()).is_some_and(|d| d == digest) {
                good.insert(digest);
            } else {
                tracing::warn!(%digest, "blob does not match its digest");
                report.corrupt_blobs.push(digest);
            }
        }
        if repair == Repair::Yes {
            for d in &report.corrupt_blobs {
                fs_err::remove_file(self.blob_path(d))?;
            }
        }

        // Tags: the manifest (or index) and everything it names.
        for (name, desc) in self.list_tags()? {
            report.tags += 1;
            if let Err(reason) = self.complete_in(&desc.digest, &good, 0) {
                report.broken_tags.push((name, reason));
            }
        }
        if repair == Repair::Yes {
            for (name, _) in &report.broken_tags {
                self.remove_tag(name)?;
            }
        }

        // Cache records: every blob they need is present and sound.
        let records: Vec<(String, Vec<u8>)> = self.db.read("list cache records", |c| {
            let mut stmt = c.prepare("SELECT key, value FROM cache_records")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })?;
        for (key, value) in records {
            report.records += 1;
            let Some(blobs) = record_blobs(&value) else {
                // Other kinds of record (explanations of misses) are not the solver's outcomes.
                continue;
            };
            if blobs.iter().any(|d| !good.contains(d)) {
                report.broken_records.push(key);
            }
        }
        if repair == Repair::Yes {
            for key in &report.broken_records {
                self.cache_delete(key)?;
            }
        }

        // Snapshot rows whose directory is gone.
        let rows: Vec<String> = self.db.read("list snapshots", |c| {
            let mut stmt = c.prepare("SELECT diff_id FROM snapshots")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        })?;
        for hex in rows {
            if !self.snapshots.join(&hex).is_dir() {
                report.missing_snapshots.push(hex);
            }
        }
        if repair == Repair::Yes {
            self.db.write("remove snapshot rows", |tx| {
                for hex in &report.missing_snapshots {
                    tx.execute("DELETE FROM snapshots WHERE diff_id = ?1", params![hex])?;
                }
                Ok(())
            })?;
        }
        Ok(report)
    }

    /// Whether manifest (or index) `digest` and everything it names are among the `good` blobs.
    fn complete_in(
        &self,
        digest: &Digest,
        good: &BTreeSet<Digest>,
        depth: u32,
    ) -> Result<(), String> {
        if !good.contains(digest) {
            return Err(format!("manifest {digest} is missing or corrupt"));
        }
        if depth > 2 {
            return Err(format!("manifest {digest} nests indexes too deep"));
        }
        let bytes = self
            .read_blob(digest)
            .map_err(|e| format!("manifest {digest}: {e}"))?;
        let json: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("manifest {digest} is not JSON: {e}"))?;
        let named =
            |v: &serde_json::Value| -> Option<Digest> { v.get("digest")?.as_str()?.parse().ok() };
        if let Some(children) = json.get("manifests").and_then(|m| m.as_array()) {
            for child in children {
                let d = named(child).ok_or_else(|| format!("index {digest} has a bad entry"))?;
                // An index may list platforms this store never pulled; those it holds must be whole.
                if self.has_blob(&d) {
                    self.complete_in(&d, good, depth + 1)?;
                }
            }
            return Ok(());
        }
        let config = json
            .get("config")
            .and_then(named)
            .ok_or_else(|| format!("manifest {digest} has no config"))?;
        let layers = json
            .get("layers")
            .and_then(|l| l.as_array())
            .ok_or_else(|| format!("manifest {digest} has no layers"))?;
        for d in std::iter::once(Some(config)).chain(layers.iter().map(named)) {
            let d = d.ok_or_else(|| format!("manifest {digest} has a bad layer"))?;
            if !good.contains(&d) {
                return Err(format!(
                    "blob {d} of manifest {digest} is missing or corrupt"
                ));
            }
        }
        Ok(())
    }
}

fn hash_file(path: &std::path::Path) -> Option<Digest> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            return Some(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci::{media_type, Descriptor, Manifest};

    // See: #19. `rbuild check` finds a corrupt layer, the tag that needs it, a record naming it, a lost
    // snapshot and an open store; `--repair` removes them, and the store checks clean afterwards.
    #[test]
    fn r19_check_finds_and_repair_removes_what_is_broken() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let config = store.put_blob(b"{}").unwrap();
        let layer = store.put_blob(b"layer bytes").unwrap();
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.to_owned()),
            config: Descriptor::new(media_type::OCI_CONFIG, config, 2),
            layers: vec![Descriptor::new(
                media_type::OCI_LAYER_GZIP,
                layer.clone(),
                11,
            )],
            annotations: std::collections::BTreeMap::new(),
        };
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let md = store.put_blob(&bytes).unwrap();
        store
            .set_tag(
                "app:1",
                &Descriptor::new(media_type::OCI_MANIFEST, md, bytes.len() as u64),
            )
            .unwrap();
        store
            .cache_put_with_refs("k1", b"layer", std::slice::from_ref(&layer))
            .unwrap();
        store.cache_put("k2", b"nothing").unwrap();
        let blobs = |v: &[u8]| -> Option<Vec<Digest>> {
            (v == b"layer").then(|| vec![Digest::sha256_of(b"layer bytes")])
        };
        let clean = store.check(Repair::No, &blobs).unwrap();
        assert!(clean.is_clean(), "{clean:?}");
        assert_eq!((clean.blobs, clean.tags, clean.records), (3, 1, 2));

        // Break things: a flipped byte in the layer, a snapshot dir gone, an open store root.
        let tmp = store.tmp_dir().unwrap();
        let snap = store
            .commit_snapshot(tmp, &Digest::sha256_of(b"snapshot"))
            .unwrap();
        fs_err::remove_dir_all(&snap).unwrap();
        fs_err::write(store.blob_path(&layer), b"layer bytez").unwrap();
        fs_err::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

        let found = store.check(Repair::No, &blobs).unwrap();
        assert_eq!(found.corrupt_blobs, vec![layer.clone()]);
        assert_eq!(found.broken_tags.len(), 1);
        assert!(
            found.broken_tags[0].1.contains(&layer.to_string()),
            "{found:?}"
        );
        assert_eq!(found.broken_records, vec!["k1".to_owned()]);
        assert_eq!(
            found.missing_snapshots,
            vec![Digest::sha256_of(b"snapshot").hex().to_owned()]
        );
        assert_eq!(found.open_dirs, vec![(root.path().to_owned(), 0o755)]);

        let repaired = store.check(Repair::Yes, &blobs).unwrap();
        assert_eq!(repaired, found);
        assert!(!store.has_blob(&layer));
        assert_eq!(store.resolve_tag("app:1").unwrap(), None);
        assert_eq!(store.cache_get("k1").unwrap(), None);
        assert_eq!(store.cache_get("k2").unwrap(), Some(b"nothing".to_vec()));
        let after = store.check(Repair::No, &blobs).unwrap();
        assert!(after.is_clean(), "{after:?}");
    }
}
