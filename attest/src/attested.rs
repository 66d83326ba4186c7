//! One build's attestations, from the flags to the files, the store and the registry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::attach::{Blob, Mode};
use crate::{dsse, provenance, publish, sbom, Error, Request, Statement, Subject};

/// What the attestation flags ask for, checked (and the key read) before the build runs.
pub struct Wanted {
    /// Which attestations.
    pub request: Request,
    /// The signing key (`--sign-key`).
    pub key: Option<dsse::SigningKey>,
    /// How they are attached on push (`--attest-mode`).
    pub mode: Mode,
}

impl Wanted {
    /// Reads `--provenance`, `--sbom`, `--attest`, `--sign-key` and `--attest-mode`; `None` when no
    /// attestation is asked for. Errors name the flag.
    pub fn from_flags(
        provenance: Option<&str>,
        sbom: Option<&str>,
        attest: &[String],
        sign_key: Option<&Path>,
        mode: &str,
    ) -> Result<Option<Self>, Error> {
        let request = Request::parse(provenance, sbom, attest).map_err(Error::Flag)?;
        let mode = mode
            .parse()
            .map_err(|e| Error::Flag(format!("--attest-mode: {e}")))?;
        let key = match sign_key {
            Some(path) => {
                let shown = path.display().to_string();
                let pem = fs_err::read_to_string(path).map_err(|source| Error::Io {
                    path: shown.clone(),
                    source,
                })?;
                Some(dsse::SigningKey::from_pem(&pem, &shown)?)
            }
            None => None,
        };
        if !request.any() {
            if key.is_some() {
                return Err(Error::Flag(
                    "--sign-key signs attestations: add --provenance and/or --sbom".into(),
                ));
            }
            return Ok(None);
        }
        Ok(Some(Self { request, key, mode }))
    }
}

/// A file tree to scan for the SBOM.
pub struct Scan {
    /// The file name stem beside a local output (`sbom`, `sbom-build`).
    pub file: String,
    /// The name in the SPDX document (`app:latest`, `app:latest (stage build)`).
    pub name: String,
    /// Its snapshot directories, base first.
    pub layers: Vec<PathBuf>,
}

/// Everything [`make`] reads of the build.
pub struct Inputs<'a> {
    /// The image reference (first tag) or `image`.
    pub name: String,
    /// The image manifest digest.
    pub image_digest: &'a oci::Digest,
    /// Provenance parameters (subject and mode are set by [`make`]).
    pub provenance: provenance::Provenance<'a>,
    /// The final image first, then with `scan-stages=true` the other stages.
    pub scans: Vec<Scan>,
    /// The attestations the store already holds for this image (a rebuild that changed nothing): the
    /// final image's SBOM is taken from there rather than scanned again.
    pub previous: Vec<publish::Found>,
    /// Where the candidate files of each snapshot are remembered between builds (snapshots never
    /// change): a base image's files are listed once, not at every build on it.
    pub listings: Option<&'a cache::Store>,
}

/// The attestations of one built image.
pub struct Attested {
    /// (file stem, statement), provenance first.
    pub statements: Vec<(String, Statement)>,
    /// What is attached (statements, or envelopes when signed), in the same order.
    pub blobs: Vec<Blob>,
    /// How they are attached on push.
    pub mode: Mode,
}

/// Makes the statements (and envelopes) for the image.
pub fn make(w: &Wanted, mut i: Inputs<'_>) -> Result<Attested, Error> {
    let subject = vec![Subject::sha256(&i.name, i.image_digest.hex())];
    let mut statements = Vec::new();
    if let Some(mode) = w.request.provenance {
        i.provenance.subject.clone_from(&subject);
        i.provenance.mode = mode;
        statements.push(("provenance".to_owned(), i.provenance.statement()));
    }
    if w.request.sbom.is_some() {
        let created = i
            .provenance
            .source_date_epoch
            .unwrap_or(i.provenance.finished);
        let format = w.request.sbom_format;
        for scan in i.scans {
            if scan.name == i.name {
                if let Some(st) = stored_sbom(&i.previous, format, &scan.name, i.image_digest) {
                    tracing::debug!(image = %i.image_digest, "SBOM reused from the store");
                    statements.push((scan.file, st));
                    continue;
                }
            }
            let tree = sbom::LayerTree::new(scan.layers).with_listings(i.listings);
            let inventory = sbom::scan(&tree)?;
            let info = sbom::DocumentInfo {
                image_name: &scan.name,
                image_digest: &i.image_digest.to_string(),
                created,
                tool: concat!("rbuild-", env!("CARGO_PKG_VERSION")),
            };
            let doc = format.document(&info, &inventory);
            let st = Statement::new(subject.clone(), format.predicate_type(), doc);
            statements.push((scan.file, st));
        }
    }
    let only: Vec<Statement> = statements.iter().map(|(_, s)| s.clone()).collect();
    Ok(Attested {
        blobs: crate::blobs(&only, w.key.as_ref()),
        statements,
        mode: w.mode,
    })
}

impl Attested {
    /// `provenance, sbom (signed)`, for progress.
    pub fn describe(&self) -> String {
        let kinds: Vec<&str> = self.statements.iter().map(|(k, _)| k.as_str()).collect();
        let signed = self
            .blobs
            .first()
            .is_some_and(|b| b.media_type == dsse::ENVELOPE_MEDIA_TYPE);
        format!(
            "{}{}",
            kinds.join(", "),
            if signed { " (signed)" } else { "" }
        )
    }

    /// BuildKit's attestation manifest of `image` with every blob it needs, for an OCI or docker
    /// layout (`-o type=oci`): the layout's image index lists it after the image.
    pub fn attachment(&self, image: &oci::Descriptor) -> export::Attachment {
        let (manifest, config) =
            crate::attach::buildkit_manifest(&image.digest.to_string(), &self.blobs);
        let mut blobs = vec![manifest.bytes, config];
        blobs.extend(self.blobs.iter().map(|b| b.bytes.clone()));
        export::Attachment {
            descriptor: serde_json::from_value(manifest.descriptor)
                .expect("attach makes valid OCI descriptors"),
            blobs,
        }
    }

    /// `provenance.json`, `sbom.spdx.json` or `sbom.cdx.json` (statements, as buildx writes them)
    /// beside a local output's tree, and `*.dsse.json` envelopes when signed.
    pub fn write_beside(&self, dest: &Path) -> Result<(), Error> {
        for ((file, st), blob) in self.statements.iter().zip(&self.blobs) {
            let stem = match sbom::Format::of_predicate_type(&st.predicate_type) {
                Some(f) => format!("{file}.{}", f.suffix()),
                None => file.clone(),
            };
            let value = serde_json::to_value(st).expect("a statement serializes");
            let pretty = serde_json::to_vec_pretty(&value).expect("a JSON value serializes");
            write(&dest.join(format!("{stem}.json")), &pretty)?;
            if blob.media_type == dsse::ENVELOPE_MEDIA_TYPE {
                write(&dest.join(format!("{stem}.dsse.json")), &blob.bytes)?;
            }
        }
        Ok(())
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    fs_err::write(path, bytes).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// An SBOM in this format this rbuild version made earlier for the same image manifest under the same
/// name. An image's file tree is fixed by its manifest digest, so its SBOM is too (creation time aside).
fn stored_sbom(
    previous: &[publish::Found],
    format: sbom::Format,
    name: &str,
    digest: &oci::Digest,
) -> Option<Statement> {
    let tool = concat!("rbuild-", env!("CARGO_PKG_VERSION"));
    let made_here = |p: &serde_json::Value| match format {
        sbom::Format::Spdx => {
            p["name"] == name
                && p["creationInfo"]["creators"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| *c == format!("Tool: {tool}")))
        }
        sbom::Format::CycloneDx => {
            let t = &p["metadata"]["tools"]["components"][0];
            p["metadata"]["component"]["name"] == name
                && format!(
                    "{}-{}",
                    t["name"].as_str().unwrap_or(""),
                    t["version"].as_str().unwrap_or("")
                ) == tool
        }
    };
    previous
        .iter()
        .filter(|f| f.predicate_type == format.predicate_type())
        .filter_map(|f| f.statement().ok())
        .find(|st| {
            st.subject
                .iter()
                .any(|s| s.digest.get("sha256").is_some_and(|d| d == digest.hex()))
                && made_here(&st.predicate)
        })
}

/// The predicates of type `predicate_type` among an image's attestations; an SBOM type stands for
/// SBOMs of either format (SPDX or CycloneDX), so `inspect --sbom` shows the one the build made.
pub fn predicates(
    found: &[publish::Found],
    predicate_type: &str,
) -> Result<Vec<serde_json::Value>, Error> {
    let is_sbom = |t: &str| sbom::Format::of_predicate_type(t).is_some();
    found
        .iter()
        .filter(|f| {
            f.predicate_type == predicate_type
                || (is_sbom(predicate_type) && is_sbom(&f.predicate_type))
        })
        .map(|f| f.statement().map(|s| s.predicate))
        .collect()
}

/// Base images by the reference the graph names them with, resolved by `resolve`.
pub fn bases<E>(
    graph: &graph::BuildGraph,
    mut resolve: impl FnMut(&str) -> Result<provenance::ResolvedImage, E>,
) -> Result<BTreeMap<String, provenance::ResolvedImage>, E> {
    let mut out = BTreeMap::new();
    for n in graph.nodes() {
        if let graph::Op::Image { reference, .. } = &n.op {
            if !out.contains_key(reference) {
                out.insert(reference.clone(), resolve(reference)?);
            }
        }
    }
    Ok(out)
}
