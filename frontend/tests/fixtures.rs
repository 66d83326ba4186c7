//! Snapshot tests over tests/fixtures/dockerfiles/{valid,invalid}/<case>/Dockerfile.
//!
//! Add a case by adding a folder, then run `cargo insta test -p frontend` and `cargo insta review`.

use std::fmt::Write as _;

use frontend::{BaseImages, Diagnostic, LowerOptions};

/// Base images without a registry: busybox-like configs for any reference.
struct FakeBases {
    requested: Vec<String>,
}

impl BaseImages for FakeBases {
    fn config(&mut self, reference: &str) -> Result<oci::ImageConfig, frontend::BoxError> {
        self.requested.push(reference.to_owned());
        let mut c = oci::ImageConfig::scratch();
        c.architecture = "amd64".into();
        c.os = "linux".into();
        c.config.env = Some(vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ]);
        c.config.cmd = Some(vec!["sh".into()]);
        c.history.push(oci::History {
            created_by: Some(format!("base layer of {reference}")),
            ..Default::default()
        });
        Ok(c)
    }
}

fn options() -> LowerOptions {
    LowerOptions {
        build_args: [("VERSION".to_owned(), "2.0".to_owned())].into(),
        target: None,
        platform: oci::Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
            os_version: None,
        },
        named_images: std::collections::BTreeMap::new(),
        build_platform: oci::Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
            os_version: None,
        },
    }
}

/// Renders diagnostics the way the binary shows them: message, location, source line, help.
fn render(src: &str, diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        writeln!(out, "error: {}", d.message).unwrap();
        writeln!(out, "  --> Dockerfile:{}:{}", d.span.line, d.span.column).unwrap();
        if d.span.end > d.span.start {
            for (i, line) in src[d.span.start..d.span.end].lines().enumerate() {
                writeln!(out, "{:>3} | {line}", d.span.line + i).unwrap();
            }
        }
        if let Some(h) = &d.help {
            writeln!(out, "  = help: {h}").unwrap();
        }
    }
    out
}

fn render_lowered(l: &frontend::Lowered, requested: &[String]) -> String {
    let mut out = String::new();
    writeln!(out, "base configs requested: {requested:?}").unwrap();
    for n in l.graph.nodes() {
        let op = serde_json::to_string(&n.op).unwrap();
        let line = n.span.map_or(0, |s| s.line);
        writeln!(
            out,
            "node {} (line {line}) inputs {:?}: {}\n    {op}",
            n.id.0,
            n.inputs.iter().map(|i| i.0).collect::<Vec<_>>(),
            n.name
        )
        .unwrap();
    }
    for (i, s) in l.stages.iter().enumerate() {
        let target = if i == l.target { " (target)" } else { "" };
        writeln!(
            out,
            "stage {} {:?}{target}: base {:?}, head {}, layers {:?}",
            s.index,
            s.name,
            s.base,
            s.head.0,
            s.layer_history
                .iter()
                .map(|(h, n)| (*h, n.0))
                .collect::<Vec<_>>()
        )
        .unwrap();
        writeln!(out, "{}", serde_json::to_string_pretty(&s.config).unwrap()).unwrap();
    }
    for w in &l.warnings {
        writeln!(out, "warning: {}", w.message).unwrap();
    }
    out
}

#[test]
fn valid_fixtures() {
    insta::glob!(
        "../../tests/fixtures",
        "dockerfiles/valid/*/Dockerfile",
        |path| {
            let src = fs_err::read_to_string(path).unwrap();
            let df = frontend::parse(&src).unwrap();
            insta::assert_debug_snapshot!("ast", df);
            let mut bases = FakeBases {
                requested: Vec::new(),
            };
            let lowered = frontend::lower(&df, &options(), &mut bases).unwrap();
            insta::assert_snapshot!("lowered", render_lowered(&lowered, &bases.requested));
        }
    );
}

#[test]
fn invalid_fixtures() {
    insta::glob!(
        "../../tests/fixtures",
        "dockerfiles/invalid/*/Dockerfile",
        |path| {
            let src = fs_err::read_to_string(path).unwrap();
            let diags = match frontend::parse(&src) {
                Err(d) => d,
                Ok(df) => {
                    let mut bases = FakeBases {
                        requested: Vec::new(),
                    };
                    frontend::lower(&df, &options(), &mut bases)
                        .expect_err("invalid fixture must not lower")
                }
            };
            insta::assert_snapshot!(render(&src, &diags));
        }
    );
}
