//! CPE 2.3 names (formatted-string binding, NISTIR 7695 §6.2) for the packages whose vendor and
//! product follow from the package's own identity, never guessed.
//!
//! Syft (the scanner BuildKit runs) looks a package up in a dictionary built from NVD, and otherwise
//! emits every combination of candidate vendors and products it derives from the name (`libc6:libc6`,
//! `python-requests:requests`, …), which are guesses. rbuild emits one CPE only where the identity is
//! well defined:
//!
//! - the Go standard library: `cpe:2.3:a:golang:go:1.21.5:-:*:*:*:*:*:*` (NVD's name for Go, as Syft);
//! - Go modules hosted under an owner and a repository — `github.com/OWNER/REPO[/…]`,
//!   `gitlab.com/…`, `bitbucket.org/…` — vendor `OWNER`, product `REPO[/…]`; `golang.org/x/NAME`
//!   (vendor `golang`, product `x/NAME`) and `google.golang.org/NAME` (vendor `google`), as Syft's
//!   Go rules derive them;
//! - nothing for Debian/Alpine/RPM, npm, Python, Java and Rust crates: their metadata has no vendor.
//!
//! Vendor and product are lowercased (NVD's convention); the version is kept as written.

use super::{Ecosystem, Package};

/// The CPE of a package, when its vendor and product are well defined (see the module docs).
pub(crate) fn of(p: &Package) -> Option<String> {
    if p.ecosystem != Ecosystem::Go {
        return None;
    }
    if p.name == "stdlib" {
        let v = p.version.strip_prefix("go")?;
        // `1.21.5`, or `1.22rc1` → version `1.22`, update `rc1` (NVD's spelling of release candidates).
        let split = v
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(v.len());
        let (version, update) = v.split_at(split);
        if version.is_empty() {
            return None;
        }
        let update = if update.is_empty() { "-" } else { update };
        return Some(format!(
            "cpe:2.3:a:golang:go:{}:{}:*:*:*:*:*:*",
            bind(version),
            bind(update)
        ));
    }
    let (vendor, product) = go_vendor_product(&p.name)?;
    Some(format!(
        "cpe:2.3:a:{}:{}:{}:*:*:*:*:*:*:*",
        bind(&vendor.to_ascii_lowercase()),
        bind(&product.to_ascii_lowercase()),
        bind(&p.version)
    ))
}

/// Vendor and product of a Go module path, where its host makes them well defined.
fn go_vendor_product(module: &str) -> Option<(&str, &str)> {
    let (host, path) = module.split_once('/')?;
    match host {
        "github.com" | "gitlab.com" | "bitbucket.org" => {
            let (owner, repo) = path.split_once('/')?;
            (!owner.is_empty() && !repo.is_empty()).then_some((owner, repo))
        }
        "golang.org" => path.starts_with("x/").then_some(("golang", path)),
        "google.golang.org" => {
            let name = path.split('/').next()?;
            (!name.is_empty()).then_some(("google", name))
        }
        _ => None,
    }
}

/// One component of a formatted string: letters, digits, `-`, `.` and `_` as they are, every other
/// printable ASCII character quoted with a backslash (so `*` and `?` are literal, not wildcards),
/// whitespace as `_`; an empty value is `-` (not applicable).
fn bind(value: &str) -> String {
    if value.is_empty() {
        return "-".to_owned();
    }
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
            out.push(c);
        } else if c.is_ascii_whitespace() {
            out.push('_');
        } else if c.is_ascii_graphic() {
            out.push('\\');
            out.push(c);
        } else {
            // Outside printable ASCII the binding has no spelling: percent-encode the UTF-8 bytes,
            // which stays within the characters the formatted string allows once quoted.
            for b in c.to_string().bytes() {
                out.push_str(&format!("\\%{b:02x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(name: &str, version: &str) -> Package {
        Package {
            ecosystem: Ecosystem::Go,
            name: name.into(),
            version: version.into(),
            arch: None,
            source: None,
            licenses: Vec::new(),
            purl: String::new(),
            found_in: String::new(),
        }
    }

    #[test]
    fn cpes_only_where_vendor_and_product_are_defined() {
        let cases = [
            (
                "stdlib",
                "go1.21.5",
                Some("cpe:2.3:a:golang:go:1.21.5:-:*:*:*:*:*:*"),
            ),
            (
                "stdlib",
                "go1.22rc1",
                Some("cpe:2.3:a:golang:go:1.22:rc1:*:*:*:*:*:*"),
            ),
            (
                "github.com/spf13/cobra",
                "v1.8.0",
                Some("cpe:2.3:a:spf13:cobra:v1.8.0:*:*:*:*:*:*:*"),
            ),
            (
                "github.com/Azure/azure-sdk-for-go/sdk/azcore",
                "v1.0.0+incompatible",
                Some(
                    r"cpe:2.3:a:azure:azure-sdk-for-go\/sdk\/azcore:v1.0.0\+incompatible:*:*:*:*:*:*:*",
                ),
            ),
            (
                "golang.org/x/net",
                "v0.17.0",
                Some(r"cpe:2.3:a:golang:x\/net:v0.17.0:*:*:*:*:*:*:*"),
            ),
            (
                "google.golang.org/grpc",
                "v1.59.0",
                Some("cpe:2.3:a:google:grpc:v1.59.0:*:*:*:*:*:*:*"),
            ),
            ("gopkg.in/yaml.v3", "v3.0.1", None),
            ("example.com/app", "v1.2.3", None),
            ("github.com/onlyowner", "v1", None),
        ];
        for (name, version, want) in cases {
            assert_eq!(of(&go(name, version)).as_deref(), want, "{name}");
        }
        let mut deb = go("libc6", "2.36-9");
        deb.ecosystem = Ecosystem::Deb;
        assert_eq!(of(&deb), None);
    }

    #[test]
    fn cpe_binding_quotes_what_the_formatted_string_reserves() {
        assert_eq!(bind("a*b?c:d"), r"a\*b\?c\:d");
        assert_eq!(bind("1.0~rc1"), r"1.0\~rc1");
        assert_eq!(bind("x y"), "x_y");
        assert_eq!(bind(""), "-");
    }
}
