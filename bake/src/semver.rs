//! `semvercmp(version, constraint)`: Masterminds/semver v3's lenient versions and constraints, as
//! buildx's stdlib uses them: `v` prefix, one to three numbers (`3.22` is `3.22.0`), pre-release and
//! build parts; constraints of comparators (`=`, `!=`, `>`, `<`, `>=`, `<=`, `~`, `~>`, `^`, wildcards
//! `x`/`X`/`*`, hyphen ranges `1.2 - 1.4`) joined by `,` or spaces (all must hold) and `||` (one group
//! must hold). A version with a pre-release only satisfies a comparator with one, as Masterminds.

use std::cmp::Ordering;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Version {
    nums: [u64; 3],
    pre: Option<String>,
}

impl Version {
    fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("invalid semantic version {text:?}");
        let t = text.trim();
        let t = t.strip_prefix(['v', 'V']).unwrap_or(t);
        let t = t.split_once('+').map_or(t, |(v, _)| v);
        let (core, pre) = match t.split_once('-') {
            Some((c, p)) if !p.is_empty() => (c, Some(p.to_owned())),
            Some(_) => return Err(bad()),
            None => (t, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        if core.is_empty() || parts.len() > 3 {
            return Err(bad());
        }
        let mut nums = [0u64; 3];
        for (i, p) in parts.iter().enumerate() {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            nums[i] = p.parse().map_err(|_| bad())?;
        }
        Ok(Self { nums, pre })
    }

    fn cmp(&self, other: &Self) -> Ordering {
        self.nums
            .cmp(&other.nums)
            .then_with(|| match (&self.pre, &other.pre) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => pre_cmp(a, b),
            })
    }
}

/// SemVer 2 pre-release order: numeric identifiers numerically and below alphanumeric ones.
fn pre_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.split('.'), b.split('.'));
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) => {
                let o = match (p.parse::<u64>(), q.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => p.cmp(q),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// A constraint's version: the numbers given (a wildcard or absence ends them) and the pre-release.
struct Bound {
    v: Version,
    /// How many numbers were given before a wildcard or the end (0 to 3).
    given: usize,
}

fn bound(text: &str) -> Result<Bound, String> {
    let bad = || format!("improper constraint: {text}");
    let t = text.trim();
    let t = t.strip_prefix(['v', 'V']).unwrap_or(t);
    if matches!(t, "*" | "x" | "X") {
        return Ok(Bound {
            v: Version {
                nums: [0; 3],
                pre: None,
            },
            given: 0,
        });
    }
    let core_end = t.find(['-', '+']).unwrap_or(t.len());
    let parts: Vec<&str> = t[..core_end].split('.').collect();
    let given = parts
        .iter()
        .position(|p| matches!(*p, "x" | "X" | "*"))
        .unwrap_or(parts.len());
    let mut version = parts[..given].join(".");
    if version.is_empty() {
        version.push('0');
    }
    let mut v = Version::parse(&format!("{version}{}", &t[core_end..])).map_err(|_| bad())?;
    if given < parts.len() {
        v.pre = None;
    }
    Ok(Bound { v, given })
}

/// The smallest version above every version `b` matches (`1.2` → `1.3.0`, `1` → `2.0.0`).
fn next_after(b: &Bound) -> Version {
    let mut n = b.v.nums;
    match b.given {
        0 => n = [u64::MAX, 0, 0],
        1 => n = [n[0] + 1, 0, 0],
        2 => n = [n[0], n[1] + 1, 0],
        _ => n = [n[0], n[1], n[2] + 1],
    }
    Version { nums: n, pre: None }
}

fn check(op: &str, b: &Bound, v: &Version) -> bool {
    let ge = |x: &Version| v.cmp(x) != Ordering::Less;
    let lt = |x: &Version| v.cmp(x) == Ordering::Less;
    let n = b.v.nums;
    match op {
        "" | "=" => {
            ge(&b.v)
                && (b.given == 3 && v.cmp(&b.v) == Ordering::Equal
                    || b.given < 3 && lt(&next_after(b)))
        }
        "!=" => {
            !(ge(&b.v)
                && (b.given == 3 && v.cmp(&b.v) == Ordering::Equal
                    || b.given < 3 && lt(&next_after(b))))
        }
        ">" => {
            if b.given == 3 {
                v.cmp(&b.v) == Ordering::Greater
            } else {
                ge(&next_after(b))
            }
        }
        ">=" | "=>" => ge(&b.v),
        "<" => lt(&b.v),
        "<=" | "=<" => {
            if b.given == 3 {
                v.cmp(&b.v) != Ordering::Greater
            } else {
                lt(&next_after(b))
            }
        }
        "~" | "~>" => {
            let upper = if b.given <= 1 {
                Version {
                    nums: [n[0] + 1, 0, 0],
                    pre: None,
                }
            } else {
                Version {
                    nums: [n[0], n[1] + 1, 0],
                    pre: None,
                }
            };
            ge(&b.v) && lt(&upper)
        }
        "^" => {
            let upper = if n[0] > 0 || b.given <= 1 {
                Version {
                    nums: [n[0] + 1, 0, 0],
                    pre: None,
                }
            } else if n[1] > 0 || b.given == 2 {
                Version {
                    nums: [0, n[1] + 1, 0],
                    pre: None,
                }
            } else {
                Version {
                    nums: [0, 0, n[2] + 1],
                    pre: None,
                }
            };
            ge(&b.v) && lt(&upper)
        }
        _ => false,
    }
}

/// Whether `version` satisfies `constraint`.
pub(crate) fn satisfies(version: &str, constraint: &str) -> Result<bool, String> {
    let v = Version::parse(version)?;
    if constraint.trim().is_empty() {
        return Err("improper constraint: (empty)".into());
    }
    let mut any = false;
    for group in constraint.split("||") {
        // Hyphen ranges first (`1.2 - 1.4.5`), then comparators split on commas and spaces, an
        // operator written apart from its version (`>= 1.0`) joined back to it.
        let group = group.trim();
        if let Some((lo, hi)) = group.split_once(" - ") {
            let (lo, hi) = (bound(lo)?, bound(hi)?);
            any |= v.pre.is_none() && check(">=", &lo, &v) && check("<=", &hi, &v);
            continue;
        }
        let mut tokens: Vec<String> = Vec::new();
        let mut pending = String::new();
        for tok in group.split([',', ' ']).filter(|t| !t.is_empty()) {
            if tok.chars().all(|c| "=!<>~^".contains(c)) {
                pending.push_str(tok);
            } else {
                tokens.push(format!("{pending}{tok}"));
                pending.clear();
            }
        }
        if !pending.is_empty() || tokens.is_empty() {
            return Err(format!("improper constraint: {constraint}"));
        }
        let mut all = true;
        for t in &tokens {
            let op_len = t.find(|c: char| !"=!<>~^".contains(c)).unwrap_or(t.len());
            let (op, rest) = t.split_at(op_len);
            if !matches!(
                op,
                "" | "=" | "!=" | ">" | "<" | ">=" | "=>" | "<=" | "=<" | "~" | "~>" | "^"
            ) {
                return Err(format!("improper constraint: {constraint}"));
            }
            let b = bound(rest).map_err(|_| format!("improper constraint: {constraint}"))?;
            // Masterminds: a pre-release version only matches comparators that name a pre-release.
            let ok = if v.pre.is_some() && b.v.pre.is_none() {
                false
            } else {
                check(op, &b, &v)
            };
            all &= ok;
        }
        any |= all;
    }
    Ok(any)
}
