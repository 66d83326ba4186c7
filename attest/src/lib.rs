//! Supply-chain attestations for built images: SLSA provenance and SPDX SBOMs as in-toto statements,
//! and DSSE envelopes that sign them.
//!
//! The build (in `src/`) hands this crate what it knows — the image manifest digest, the build's
//! parameters, the resolved base images and downloads, the steps and their cache keys — and a read-only
//! view of the final image's file tree. This crate turns them into documents; it does no network I/O,
//! knows nothing of registries or of the solver, and never sees a secret's value except to redact it.
//!
//! - [`provenance::Provenance`] → an in-toto Statement v1 with a SLSA Provenance v1 predicate.
//! - [`sbom::scan`] reads package databases (dpkg, apk, RPM, npm, Python metadata, Java archives) and
//!   the build information of Go and cargo-auditable executables from a [`sbom::Tree`];
//!   [`sbom::spdx_document`] / [`sbom::cyclonedx_document`] write the result as SPDX 2.3 / CycloneDX 1.5
//!   JSON.
//! - [`dsse::SigningKey`] / [`dsse::VerifyingKey`] sign and check DSSE envelopes (ECDSA P-256 or Ed25519,
//!   PEM as cosign and openssl write them).
//!
//! ```
//! let statement = attest::Statement::new(
//!     vec![attest::Subject::sha256("app", &"ab".repeat(32))],
//!     attest::provenance::PREDICATE_TYPE,
//!     serde_json::json!({}),
//! );
//! assert_eq!(statement.type_, attest::STATEMENT_TYPE);
//! ```
#![forbid(unsafe_code)]

pub mod attach;
mod attested;
pub mod dsse;
mod format;
pub mod provenance;
pub mod publish;
pub mod redact;
pub mod remote;
pub mod sbom;
mod statement;

pub use attested::{bases, make, predicates, Attested, Inputs, Scan, Wanted};
pub use statement::{Statement, Subject, STATEMENT_TYPE};

/// Why an attestation could not be made, signed or checked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key file is not a key this crate can use.
    #[error("{path}: {message}")]
    Key { path: String, message: String },
    /// A DSSE envelope failed verification.
    #[error("signature verification failed: {0}")]
    Verify(String),
    /// An envelope or statement is not what it should be.
    #[error("malformed {what}: {message}")]
    Malformed { what: &'static str, message: String },
    /// An attestation flag is wrong (the message names it).
    #[error("{0}")]
    Flag(String),
    /// Reading or writing a file failed.
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Storing or pushing failed.
    #[error(transparent)]
    Publish(#[from] publish::PublishError),
    /// Reading a file of the image tree failed.
    #[error("reading {path} in the image")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The blobs to attach for these statements: the statements themselves, or DSSE envelopes of them
/// when a signing key is given.
pub fn blobs(statements: &[Statement], key: Option<&dsse::SigningKey>) -> Vec<attach::Blob> {
    statements
        .iter()
        .map(|s| {
            let bytes = s.to_bytes();
            match key {
                None => attach::Blob {
                    bytes,
                    media_type: attach::IN_TOTO_MEDIA_TYPE,
                    predicate_type: s.predicate_type.clone(),
                },
                Some(k) => attach::Blob {
                    bytes: serde_json::to_vec(&k.sign(dsse::IN_TOTO_PAYLOAD_TYPE, &bytes))
                        .expect("an envelope serializes"),
                    media_type: dsse::ENVELOPE_MEDIA_TYPE,
                    predicate_type: s.predicate_type.clone(),
                },
            }
        })
        .collect()
}

/// One checked attestation: its predicate type and the subject it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The statement's predicate type.
    pub predicate_type: String,
    /// The subject's sha256 (hex).
    pub subject: String,
}

/// Checks every attestation of an image with `key`: each must be a DSSE envelope signed by it, of type
/// in-toto, whose statement's predicate type matches the one it was attached as and whose subject is
/// `image_digest`. Fails on the first that does not, or when there is none.
pub fn verify(
    found: &[publish::Found],
    key: &dsse::VerifyingKey,
    image_digest: &oci::Digest,
) -> Result<Vec<Verified>, Error> {
    if found.is_empty() {
        return Err(Error::Verify(format!("no attestations for {image_digest}")));
    }
    let mut out = Vec::new();
    for f in found {
        if f.media_type != dsse::ENVELOPE_MEDIA_TYPE {
            return Err(Error::Verify(format!(
                "the {} attestation is not signed ({})",
                f.predicate_type, f.media_type
            )));
        }
        let env: dsse::Envelope =
            serde_json::from_slice(&f.bytes).map_err(|e| Error::Malformed {
                what: "DSSE envelope",
                message: e.to_string(),
            })?;
        if env.payload_type != dsse::IN_TOTO_PAYLOAD_TYPE {
            return Err(Error::Verify(format!(
                "payload type {:?} is not in-toto",
                env.payload_type
            )));
        }
        let payload = key.verify(&env)?;
        let statement: Statement =
            serde_json::from_slice(&payload).map_err(|e| Error::Malformed {
                what: "in-toto statement",
                message: e.to_string(),
            })?;
        if statement.predicate_type != f.predicate_type {
            return Err(Error::Verify(format!(
                "attached as {} but the signed statement is {}",
                f.predicate_type, statement.predicate_type
            )));
        }
        let hex = image_digest.hex();
        let Some(subject) = statement
            .subject
            .iter()
            .find_map(|s| s.digest.get("sha256").filter(|d| *d == hex))
        else {
            return Err(Error::Verify(format!(
                "the signed {} statement is about another image (not {image_digest})",
                statement.predicate_type
            )));
        };
        out.push(Verified {
            predicate_type: statement.predicate_type,
            subject: subject.clone(),
        });
    }
    Ok(out)
}

/// What the attestation flags ask for (`--provenance`, `--sbom`, `--attest`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Provenance, and how much of it.
    pub provenance: Option<provenance::Mode>,
    /// An SBOM; `Some(true)` also scans the stages the target copies from (`scan-stages=true`).
    pub sbom: Option<bool>,
    /// The SBOM's format (`format=spdx|cyclonedx`).
    pub sbom_format: sbom::Format,
}

impl Request {
    /// Reads the flags as buildx spells them: `--provenance[=true|false|min|max|mode=min|mode=max]`,
    /// `--sbom[=true|false|scan-stages=true]`, `--attest type=provenance|sbom[,mode=..][,scan-stages=..]
    /// [,disabled=true]`, plus rbuild's `format=spdx|cyclonedx` for the SBOM. Later flags win. Errors
    /// name the flag and the value.
    pub fn parse(
        provenance: Option<&str>,
        sbom: Option<&str>,
        attest: &[String],
    ) -> Result<Self, String> {
        let mut r = Self::default();
        if let Some(v) = provenance {
            r.set("provenance", &spec_fields(v), "--provenance")?;
        }
        if let Some(v) = sbom {
            r.set("sbom", &spec_fields(v), "--sbom")?;
        }
        for a in attest {
            let fields = spec_fields(a);
            let kind = fields
                .iter()
                .find(|(k, _)| k == "type")
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("--attest {a:?}: needs type=provenance or type=sbom"))?;
            let rest: Vec<(String, String)> =
                fields.into_iter().filter(|(k, _)| k != "type").collect();
            r.set(&kind, &rest, &format!("--attest {a:?}"))?;
        }
        Ok(r)
    }

    /// Whether anything is asked for.
    pub fn any(&self) -> bool {
        self.provenance.is_some() || self.sbom.is_some()
    }

    fn set(&mut self, kind: &str, fields: &[(String, String)], flag: &str) -> Result<(), String> {
        let mut on = true;
        let mut mode = provenance::Mode::Min;
        let mut scan_stages = false;
        let mut format = sbom::Format::Spdx;
        for (k, v) in fields {
            let bool_of = |v: &str| match v {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(format!("{flag}: {k}={v:?} is not true or false")),
            };
            match (kind, k.as_str()) {
                (_, "" | "enabled") => on = bool_of(v)?,
                (_, "disabled") => on = !bool_of(v)?,
                ("provenance", "mode") => mode = v.parse().map_err(|e| format!("{flag}: {e}"))?,
                ("provenance", "min" | "max") if v.is_empty() => mode = k.parse()?,
                ("sbom", "scan-stages") => scan_stages = bool_of(v)?,
                ("sbom", "format") => format = v.parse().map_err(|e| format!("{flag}: {e}"))?,
                // BuildKit's scanner image; rbuild scans by itself.
                ("sbom", "generator") => {
                    return Err(format!(
                        "{flag}: generator= is not supported: rbuild makes the SBOM with its own scanners"
                    ))
                }
                ("provenance" | "sbom", _) => {
                    return Err(format!("{flag}: unknown option {k:?}"));
                }
                _ => return Err(format!("{flag}: unknown attestation type {kind:?}")),
            }
        }
        if !matches!(kind, "provenance" | "sbom") {
            return Err(format!("{flag}: unknown attestation type {kind:?}"));
        }
        match (kind, on) {
            ("provenance", true) => self.provenance = Some(mode),
            ("provenance", false) => self.provenance = None,
            (_, true) => {
                self.sbom = Some(scan_stages);
                self.sbom_format = format;
            }
            (_, false) => self.sbom = None,
        }
        Ok(())
    }
}

/// `a=b,c` → [(a, b), ("", c)] for a bare `true`/`false`, or (c, "") for a bare word like `max`.
fn spec_fields(spec: &str) -> Vec<(String, String)> {
    spec.split(',')
        .filter(|s| !s.is_empty())
        .map(|f| match f.split_once('=') {
            Some((k, v)) => (k.trim().to_owned(), v.trim().to_owned()),
            None if matches!(f, "true" | "false" | "1" | "0") => (String::new(), f.to_owned()),
            None => (f.trim().to_owned(), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_as_buildx_spells_them() {
        let r = Request::parse(Some("mode=max"), Some("true"), &[]).unwrap();
        assert_eq!(r.provenance, Some(provenance::Mode::Max));
        assert_eq!(r.sbom, Some(false));
        let r = Request::parse(Some("true"), None, &["type=sbom,scan-stages=true".into()]).unwrap();
        assert_eq!(r.provenance, Some(provenance::Mode::Min));
        assert_eq!(r.sbom, Some(true));
        let r = Request::parse(
            Some("max"),
            Some("false"),
            &["type=provenance,disabled=true".into()],
        )
        .unwrap();
        assert!(!r.any());
        let e = Request::parse(None, None, &["type=vex".into()]).unwrap_err();
        assert_eq!(e, "--attest \"type=vex\": unknown attestation type \"vex\"");
        let e = Request::parse(Some("mode=full"), None, &[]).unwrap_err();
        assert!(
            e.starts_with("--provenance: mode must be min or max"),
            "{e}"
        );
        let r = Request::parse(None, Some("format=cyclonedx"), &[]).unwrap();
        assert_eq!(r.sbom_format, sbom::Format::CycloneDx);
        let r = Request::parse(
            None,
            None,
            &["type=sbom,format=spdx,scan-stages=true".into()],
        )
        .unwrap();
        assert_eq!((r.sbom, r.sbom_format), (Some(true), sbom::Format::Spdx));
        let e = Request::parse(None, Some("format=syft-json"), &[]).unwrap_err();
        assert_eq!(e, "--sbom: format=\"syft-json\" is not spdx or cyclonedx");
        let e = Request::parse(None, Some("generator=docker/scout"), &[]).unwrap_err();
        assert!(e.contains("own scanners"), "{e}");
    }

    #[test]
    fn verify_checks_signature_type_and_subject() {
        let key = dsse::SigningKey::from_pem(dsse::tests::ED_PKCS8, "k").unwrap();
        let image = oci::Digest::sha256_of(b"manifest");
        let other = oci::Digest::sha256_of(b"other");
        let st = |d: &oci::Digest| {
            Statement::new(
                vec![Subject::sha256("app", d.hex())],
                provenance::PREDICATE_TYPE,
                serde_json::json!({}),
            )
        };
        let found = |b: attach::Blob| publish::Found {
            predicate_type: b.predicate_type,
            media_type: b.media_type.to_owned(),
            bytes: b.bytes,
        };
        let signed: Vec<_> = blobs(&[st(&image)], Some(&key))
            .into_iter()
            .map(found)
            .collect();
        let ok = verify(&signed, &key.verifying_key(), &image).unwrap();
        assert_eq!(ok[0].subject, image.hex());
        let e = verify(&signed, &key.verifying_key(), &other).unwrap_err();
        assert!(e.to_string().contains("about another image"), "{e}");
        let unsigned: Vec<_> = blobs(&[st(&image)], None).into_iter().map(found).collect();
        let e = verify(&unsigned, &key.verifying_key(), &image).unwrap_err();
        assert!(e.to_string().contains("not signed"), "{e}");
        let mut relabelled = signed.clone();
        relabelled[0].predicate_type = sbom::PREDICATE_TYPE.into();
        assert!(verify(&relabelled, &key.verifying_key(), &image).is_err());
        assert!(verify(&[], &key.verifying_key(), &image).is_err());
    }
}
