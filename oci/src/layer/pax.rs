//! PAX extended header records (POSIX.1-2001 `x` entries).

/// Appends one `"<len> <key>=<value>\n"` record, where `<len>` counts the whole record including itself.
pub(super) fn push_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    // The length's own digit count is part of the length; iterate to the fixed point.
    while rest + digits(len) != len {
        len = rest + digits(len);
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn digits(n: usize) -> usize {
    n.to_string().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_length_includes_itself() {
        let mut out = Vec::new();
        push_record(&mut out, b"path", b"a");
        assert_eq!(out, b"9 path=a\n");
        let mut out = Vec::new();
        push_record(&mut out, b"path", b"abcdef");
        assert_eq!(out, b"15 path=abcdef\n");
        // 9 bytes of text would make 10 with one digit, which needs two digits: 11.
        let mut out = Vec::new();
        push_record(&mut out, b"k", b"12345");
        assert_eq!(out, b"11 k=12345\n");
    }
}
