//! Timestamps for the date functions (`formatdate`, `formattimestamp`, `timeadd`,
//! `unixtimestampparse`): RFC 3339 parsing and go-cty's `formatdate` verbs, in whole seconds.

use hcl::{Map, Value};

/// A moment: seconds since the Unix epoch, shown at a fixed offset from UTC.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Time {
    secs: i64,
    offset: i64,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

use oci::time::{civil_from_days as civil, days_from_civil};

struct Fields {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    weekday: i64,
    year_day: i64,
}

impl Time {
    /// `secs` since the epoch, in UTC.
    pub(crate) fn utc(secs: i64) -> Self {
        Self { secs, offset: 0 }
    }

    /// Seconds since the epoch.
    pub(crate) fn unix(self) -> i64 {
        self.secs
    }

    /// The same offset, `d` seconds later (fractions dropped, as RFC 3339 output shows whole seconds).
    pub(crate) fn add_seconds(self, d: f64) -> Self {
        #[allow(clippy::cast_possible_truncation)]
        let d = d.floor() as i64;
        Self {
            secs: self.secs + d,
            offset: self.offset,
        }
    }

    fn fields(self) -> Fields {
        let local = self.secs + self.offset;
        let days = local.div_euclid(86_400);
        let rem = local.rem_euclid(86_400);
        let (year, month, day) = civil(days);
        Fields {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
            weekday: (days + 4).rem_euclid(7),
            year_day: days - days_from_civil(year, 1, 1) + 1,
        }
    }

    fn zone(self, colon: bool) -> String {
        let sign = if self.offset < 0 { '-' } else { '+' };
        let o = self.offset.abs();
        if colon {
            format!("{sign}{:02}:{:02}", o / 3600, o % 3600 / 60)
        } else {
            format!("{sign}{:02}{:02}", o / 3600, o % 3600 / 60)
        }
    }

    /// RFC 3339 (`2006-01-02T15:04:05Z07:00`).
    pub(crate) fn to_rfc3339(self) -> String {
        let f = self.fields();
        let zone = if self.offset == 0 {
            "Z".to_owned()
        } else {
            self.zone(true)
        };
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{zone}",
            f.year, f.month, f.day, f.hour, f.minute, f.second
        )
    }

    /// `unixtimestampparse`'s object (buildx's stdlib).
    pub(crate) fn parts(self) -> Value {
        let f = self.fields();
        // ISO 8601 week: the week with the year's first Thursday is week 1.
        let thursday = self.secs.div_euclid(86_400) - (f.weekday + 6) % 7 + 3;
        let (iso_year, _, _) = civil(thursday);
        let iso_week = (thursday - days_from_civil(iso_year, 1, 1)) / 7 + 1;
        #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
        let m: Map<String, Value> = [
            ("day", Value::from(f.day)),
            ("hour", f.hour.into()),
            ("iso_week", iso_week.into()),
            ("iso_year", iso_year.into()),
            ("minute", f.minute.into()),
            ("month", f.month.into()),
            ("month_name", MONTHS[(f.month - 1) as usize].into()),
            ("rfc3339", self.to_rfc3339().into()),
            ("second", f.second.into()),
            ("weekday", f.weekday.into()),
            ("weekday_name", DAYS[f.weekday as usize].into()),
            ("year", f.year.into()),
            ("year_day", f.year_day.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Value::Object(m)
    }
}

/// RFC 3339 in UTC of `secs` since the epoch.
pub(crate) fn rfc3339(secs: i64) -> String {
    Time::utc(secs).to_rfc3339()
}

/// Parses an RFC 3339 timestamp (`2006-01-02T15:04:05Z`, `…+07:00`, fractional seconds allowed).
pub(crate) fn parse_rfc3339(s: &str) -> Result<Time, String> {
    let bad = || format!("not a valid RFC3339 timestamp: {s:?}");
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return Err(bad());
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let t = s.get(r).ok_or_else(bad)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse().map_err(|_| bad())
    };
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        z if z.len() == 6 && matches!(z.as_bytes()[0], b'+' | b'-') && z.as_bytes()[3] == b':' => {
            let oh: i64 = z[1..3].parse().map_err(|_| bad())?;
            let om: i64 = z[4..6].parse().map_err(|_| bad())?;
            let o = oh * 3600 + om * 60;
            if z.starts_with('-') {
                -o
            } else {
                o
            }
        }
        _ => return Err(bad()),
    };
    let local = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec;
    Ok(Time {
        secs: local - offset,
        offset,
    })
}

/// Parses a Go duration (`1h30m`, `-10s`, `1.5h`, `300ms`) into seconds.
pub(crate) fn parse_duration(s: &str) -> Result<f64, String> {
    let bad = || format!("invalid duration {s:?}");
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0.0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let n = rest
            .bytes()
            .take_while(|c| c.is_ascii_digit() || *c == b'.')
            .count();
        let value: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest
            .chars()
            .take_while(|c| !c.is_ascii_digit() && *c != '.')
            .map(char::len_utf8)
            .sum::<usize>();
        let unit = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[u..];
        total += value * unit;
    }
    Ok(if neg { -total } else { total })
}

/// go-cty's `formatdate`: letter sequences are verbs (`YYYY`, `MM`, `DD`, `hh`, `mm`, `ss`, `EEE`,
/// `MMM`, `ZZZZZ`, …), text in single quotes is literal (`''` is a quote), anything else is copied.
pub(crate) fn format(fmt: &str, t: &Time) -> Result<String, String> {
    let f = t.fields();
    let mut out = String::new();
    let chars: Vec<char> = fmt.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            let mut j = i + 1;
            if chars.get(j) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            loop {
                match chars.get(j) {
                    None => return Err("unterminated literal '".into()),
                    Some('\'') if chars.get(j + 1) == Some(&'\'') => {
                        out.push('\'');
                        j += 2;
                    }
                    Some('\'') => break,
                    Some(&x) => {
                        out.push(x);
                        j += 1;
                    }
                }
            }
            i = j + 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            out.push(c);
            i += 1;
            continue;
        }
        let mut j = i;
        while chars.get(j) == Some(&c) {
            j += 1;
        }
        let tok: String = chars[i..j].iter().collect();
        let n = j - i;
        let h12 = if f.hour % 12 == 0 { 12 } else { f.hour % 12 };
        #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
        let text = match (c, n) {
            ('Y', 4) => format!("{:04}", f.year),
            ('Y', 2) => format!("{:02}", f.year % 100),
            ('M', 4) => MONTHS[(f.month - 1) as usize].to_owned(),
            ('M', 3) => MONTHS[(f.month - 1) as usize][..3].to_owned(),
            ('M', 2) => format!("{:02}", f.month),
            ('M', 1) => f.month.to_string(),
            ('D', 2) => format!("{:02}", f.day),
            ('D', 1) => f.day.to_string(),
            ('E', 4) => DAYS[f.weekday as usize].to_owned(),
            ('E', 3) => DAYS[f.weekday as usize][..3].to_owned(),
            ('h', 2) => format!("{:02}", f.hour),
            ('h', 1) => f.hour.to_string(),
            ('H', 2) => format!("{h12:02}"),
            ('H', 1) => h12.to_string(),
            ('A', 2) => if f.hour < 12 { "AM" } else { "PM" }.to_owned(),
            ('a', 2) => if f.hour < 12 { "am" } else { "pm" }.to_owned(),
            ('m', 2) => format!("{:02}", f.minute),
            ('m', 1) => f.minute.to_string(),
            ('s', 2) => format!("{:02}", f.second),
            ('s', 1) => f.second.to_string(),
            ('Z', 5) => t.zone(true),
            ('Z', 4) => t.zone(false),
            ('Z', 3) => if t.offset == 0 { "UTC".to_owned() } else { String::new() },
            ('Z', 1) => {
                if t.offset == 0 {
                    "Z".to_owned()
                } else {
                    t.zone(true)
                }
            }
            _ => {
                return Err(format!(
                    "invalid date format verb {tok:?}: might you need to use a literal string, like '{tok}'?"
                ))
            }
        };
        out.push_str(&text);
        i = j;
    }
    Ok(out)
}
