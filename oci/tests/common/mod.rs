//! Helpers shared by the layer tests.

/// Appends a PAX extended header named `name` holding `records` (`key=value`, each prefixed by its own
/// length in decimal, the length counting its own digits) to `b`.
pub(crate) fn append_pax<W: std::io::Write>(
    b: &mut tar::Builder<W>,
    name: &str,
    records: &[(&str, &str)],
) {
    let mut body = Vec::new();
    for (k, v) in records {
        let len = k.len() + v.len() + 3;
        let mut n = len + len.to_string().len();
        if n.to_string().len() != len.to_string().len() {
            n += 1;
        }
        body.extend_from_slice(format!("{n} {k}={v}\n").as_bytes());
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_path(name).unwrap();
    h.set_size(body.len() as u64);
    h.set_cksum();
    b.append(&h, &body[..]).unwrap();
}
