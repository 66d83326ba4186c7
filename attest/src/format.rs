//! Text forms shared by the documents: hex sha256 digests and RFC 3339 timestamps.

/// Lowercase hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    oci::Digest::sha256_of(bytes).hex().to_owned()
}

/// `2024-01-02T03:04:05Z` for seconds since the epoch.
pub(crate) fn rfc3339(secs: i64) -> String {
    oci::time::rfc3339(secs)
}
