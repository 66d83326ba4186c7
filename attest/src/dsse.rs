//! DSSE envelopes (the in-toto signature wrapper): sign a payload with an ECDSA P-256 or Ed25519 key,
//! verify it with the public key.
//!
//! Keys are PEM: private keys as PKCS#8 (`PRIVATE KEY`, what `openssl genpkey` writes) or SEC1
//! (`EC PRIVATE KEY`), public keys as SubjectPublicKeyInfo (`PUBLIC KEY`, what `cosign public-key` and
//! `openssl pkey -pubout` write). ECDSA signatures are ASN.1 DER over SHA-256 (as cosign and
//! securesystemslib's `ecdsa-sha2-nistp256` make them); Ed25519 signatures are the raw 64 bytes.
//! cosign's encrypted `ENCRYPTED SIGSTORE PRIVATE KEY` files are refused with a message saying so.
//!
//! Uses RustCrypto's `p256` and `ed25519-dalek` (audited, maintained, pure Rust, constant-time) rather
//! than OpenSSL bindings, so the binary still needs no C toolchain.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::Error;

/// `payloadType` of an in-toto statement in a DSSE envelope.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// Media type of a DSSE envelope blob holding an in-toto statement (as cosign attaches them).
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";

/// A DSSE envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The payload, base64 (standard alphabet, padded).
    pub payload: String,
    /// What the payload is.
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// Signatures over the pre-authentication encoding of type and payload.
    pub signatures: Vec<Signature>,
}

impl Envelope {
    /// The payload, decoded (not verified).
    pub fn payload_bytes(&self) -> Result<Vec<u8>, Error> {
        b64().decode(&self.payload).map_err(|e| Error::Malformed {
            what: "DSSE envelope",
            message: format!("payload is not base64: {e}"),
        })
    }
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// sha256 (hex) of the signer's public key in SubjectPublicKeyInfo DER.
    #[serde(default)]
    pub keyid: String,
    /// The signature, base64.
    pub sig: String,
}

/// DSSE's pre-authentication encoding: `DSSEv1 <len type> <type> <len body> <body>`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// A private key for signing.
pub enum SigningKey {
    /// ECDSA on P-256 with SHA-256.
    EcdsaP256(p256::ecdsa::SigningKey),
    /// Ed25519.
    Ed25519(ed25519_dalek::SigningKey),
}

/// A public key for verification.
#[derive(Debug, Clone)]
pub enum VerifyingKey {
    /// ECDSA on P-256 with SHA-256.
    EcdsaP256(p256::ecdsa::VerifyingKey),
    /// Ed25519.
    Ed25519(ed25519_dalek::VerifyingKey),
}

fn key_error(path: &str, message: impl Into<String>) -> Error {
    Error::Key {
        path: path.to_owned(),
        message: message.into(),
    }
}

impl SigningKey {
    /// Reads a PEM private key; `path` only names the file in errors.
    pub fn from_pem(pem: &str, path: &str) -> Result<Self, Error> {
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        if pem.contains("ENCRYPTED") {
            return Err(key_error(
                path,
                "encrypted private keys are not supported; give an unencrypted PKCS#8 PEM \
                 (`openssl pkcs8 -topk8 -nocrypt`)",
            ));
        }
        if pem.contains("-----BEGIN EC PRIVATE KEY-----") {
            return p256::SecretKey::from_sec1_pem(pem)
                .map(|k| Self::EcdsaP256(k.into()))
                .map_err(|e| key_error(path, format!("not a P-256 SEC1 key: {e}")));
        }
        if !pem.contains("-----BEGIN PRIVATE KEY-----") {
            return Err(key_error(
                path,
                "no `PRIVATE KEY` or `EC PRIVATE KEY` PEM block",
            ));
        }
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Ok(Self::EcdsaP256(k));
        }
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(Self::Ed25519)
            .map_err(|_| key_error(path, "not an ECDSA P-256 or Ed25519 PKCS#8 private key"))
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        match self {
            Self::EcdsaP256(k) => VerifyingKey::EcdsaP256(*k.verifying_key()),
            Self::Ed25519(k) => VerifyingKey::Ed25519(k.verifying_key()),
        }
    }

    /// Signs `payload` of `payload_type` into an envelope.
    pub fn sign(&self, payload_type: &str, payload: &[u8]) -> Envelope {
        use p256::ecdsa::signature::Signer as _;
        let msg = pae(payload_type, payload);
        let sig = match self {
            Self::EcdsaP256(k) => {
                let s: p256::ecdsa::Signature = k.sign(&msg);
                s.to_der().as_bytes().to_vec()
            }
            Self::Ed25519(k) => k.sign(&msg).to_bytes().to_vec(),
        };
        Envelope {
            payload: b64().encode(payload),
            payload_type: payload_type.to_owned(),
            signatures: vec![Signature {
                keyid: self.verifying_key().key_id(),
                sig: b64().encode(sig),
            }],
        }
    }
}

impl VerifyingKey {
    /// Reads a PEM public key (`PUBLIC KEY`); `path` only names the file in errors.
    pub fn from_pem(pem: &str, path: &str) -> Result<Self, Error> {
        use ed25519_dalek::pkcs8::DecodePublicKey as _;
        if !pem.contains("-----BEGIN PUBLIC KEY-----") {
            return Err(key_error(path, "no `PUBLIC KEY` PEM block"));
        }
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            return Ok(Self::EcdsaP256(k));
        }
        ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
            .map(Self::Ed25519)
            .map_err(|_| key_error(path, "not an ECDSA P-256 or Ed25519 public key"))
    }

    /// The key as a `PUBLIC KEY` PEM.
    pub fn to_pem(&self) -> String {
        use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePublicKey as _};
        match self {
            Self::EcdsaP256(k) => k.to_public_key_pem(LineEnding::LF),
            Self::Ed25519(k) => k.to_public_key_pem(LineEnding::LF),
        }
        .expect("a valid public key always encodes")
    }

    /// sha256 (hex) of the SubjectPublicKeyInfo DER.
    pub fn key_id(&self) -> String {
        use ed25519_dalek::pkcs8::EncodePublicKey as _;
        let der = match self {
            Self::EcdsaP256(k) => k.to_public_key_der(),
            Self::Ed25519(k) => k.to_public_key_der(),
        }
        .expect("a valid public key always encodes");
        crate::format::sha256_hex(der.as_bytes())
    }

    /// `ecdsa-p256` or `ed25519`.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Self::EcdsaP256(_) => "ecdsa-p256",
            Self::Ed25519(_) => "ed25519",
        }
    }

    /// Checks that one of the envelope's signatures is this key's over its payload; returns the payload.
    pub fn verify(&self, env: &Envelope) -> Result<Vec<u8>, Error> {
        use p256::ecdsa::signature::Verifier as _;
        let payload = b64()
            .decode(&env.payload)
            .map_err(|e| Error::Verify(format!("payload is not base64: {e}")))?;
        let msg = pae(&env.payload_type, &payload);
        if env.signatures.is_empty() {
            return Err(Error::Verify("the envelope has no signature".into()));
        }
        for s in &env.signatures {
            let Ok(raw) = b64().decode(&s.sig) else {
                continue;
            };
            let ok = match self {
                Self::EcdsaP256(k) => p256::ecdsa::Signature::from_der(&raw)
                    .is_ok_and(|sig| k.verify(&msg, &sig).is_ok()),
                Self::Ed25519(k) => ed25519_dalek::Signature::from_slice(&raw)
                    .is_ok_and(|sig| k.verify_strict(&msg, &sig).is_ok()),
            };
            if ok {
                return Ok(payload);
            }
        }
        Err(Error::Verify(format!(
            "no signature of the {} key {} matches",
            self.algorithm(),
            &self.key_id()[..16]
        )))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // Test keys made with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` and
    // `openssl genpkey -algorithm ed25519` (throwaway keys, for these tests only).
    const EC_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg1PUSYKDQA+F8J4t8
Wnw6AeCbdPuQtjtFXY0ZbxCgsZWhRANCAATYM0K5TzAHzJV1a9dS2ILMxZ+bUzzq
oeO823vRhJ7FYnSC5agcY3fSQqu0K3v1oHd7Civ9YCN2vUqZALAVf/R6
-----END PRIVATE KEY-----
";
    pub(crate) const ED_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIL1WgHreA2JCw/tGLciXYP0oAzNaFaxqXtKO6OoxyDND
-----END PRIVATE KEY-----
";

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn sign_and_verify_both_algorithms_and_reject_tampering() {
        for pem in [EC_PKCS8, ED_PKCS8] {
            let key = SigningKey::from_pem(pem, "key.pem").unwrap();
            let public = VerifyingKey::from_pem(&key.verifying_key().to_pem(), "pub.pem").unwrap();
            let env = key.sign(IN_TOTO_PAYLOAD_TYPE, b"{\"a\":1}");
            assert_eq!(env.signatures[0].keyid, public.key_id());
            assert_eq!(public.verify(&env).unwrap(), b"{\"a\":1}");

            let mut tampered = env.clone();
            tampered.payload = b64().encode(b"{\"a\":2}");
            assert!(public.verify(&tampered).is_err());
            let mut retyped = env.clone();
            retyped.payload_type = "text/plain".into();
            assert!(public.verify(&retyped).is_err());
        }
        let ec = SigningKey::from_pem(EC_PKCS8, "ec").unwrap();
        let ed = SigningKey::from_pem(ED_PKCS8, "ed").unwrap();
        let err = ed
            .verifying_key()
            .verify(&ec.sign(IN_TOTO_PAYLOAD_TYPE, b"x"))
            .unwrap_err();
        assert!(
            err.to_string().contains("no signature of the ed25519 key"),
            "{err}"
        );
    }

    #[test]
    fn bad_keys_are_named() {
        let e = SigningKey::from_pem(
            "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n",
            "cosign.key",
        )
        .err()
        .unwrap();
        assert!(e.to_string().starts_with("cosign.key: encrypted"), "{e}");
        let e = VerifyingKey::from_pem("hello", "pub.pem").err().unwrap();
        assert_eq!(e.to_string(), "pub.pem: no `PUBLIC KEY` PEM block");
    }
}
