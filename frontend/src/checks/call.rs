//! `--call` as buildx parses it: `build` (the default), `check` (`--check`; buildx's alias of `lint`),
//! `outline`, `targets`, with `,format=json|text` and `,ignorestatus=true`.

/// What `rbuild build` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Build the image.
    Build,
    /// Run the build checks and validate the build without running it.
    Check,
    /// Print the build args and secrets the target uses.
    Outline,
    /// Print the stages.
    Targets,
}

/// A parsed `--call` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// The method.
    pub method: Method,
    /// `format=json`.
    pub json: bool,
    /// `ignorestatus=true`: warnings do not make the exit status non-zero.
    pub ignore_status: bool,
}

impl Call {
    /// Parses `--call VALUE`; `check` is true with `--check` (which is `--call=check`).
    ///
    /// # Errors
    /// An unknown method, field or format, or two methods.
    pub fn parse(value: &str, check: bool) -> Result<Self, String> {
        let mut method = None;
        let mut json = false;
        let mut ignore_status = false;
        for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            match field.split_once('=') {
                Some(("format", "json")) => json = true,
                Some(("format", "text")) => json = false,
                Some(("format", f)) => {
                    return Err(format!("--call: unknown format {f:?} (json or text)"))
                }
                Some(("ignorestatus", v)) => {
                    ignore_status = super::parse_go_bool(v)
                        .ok_or_else(|| format!("--call: invalid ignorestatus value: {v}"))?;
                }
                Some(_) => return Err(format!("--call: invalid field: {field}")),
                None if method.is_some() => return Err(format!("--call: invalid value: {value}")),
                None => {
                    method = Some(match field {
                        "build" => Method::Build,
                        "check" | "lint" => Method::Check,
                        "outline" => Method::Outline,
                        "targets" => Method::Targets,
                        other => {
                            return Err(format!(
                                "--call: unknown method {other:?} (build, check, outline, targets)"
                            ))
                        }
                    });
                }
            }
        }
        let method = match (method, check) {
            (None | Some(Method::Build), true) => Method::Check,
            (Some(m), true) if m != Method::Check => {
                return Err(
                    "--check is --call=check: it cannot be combined with another --call".into(),
                )
            }
            (m, _) => m.unwrap_or(Method::Build),
        };
        Ok(Self {
            method,
            json,
            ignore_status,
        })
    }
}

/// The output of `--call outline` or `--call targets` (text as buildx prints it, or JSON as BuildKit's
/// subrequest result), for `df` and the build's args and target.
///
/// # Errors
/// `--call outline --target X` when there is no stage `X`; any other method.
pub fn describe(
    call: &Call,
    df: &crate::Dockerfile,
    build_args: &std::collections::BTreeMap<String, String>,
    target: Option<&str>,
) -> Result<String, String> {
    let json = |v: serde_json::Value| format!("{v:#}\n");
    match call.method {
        Method::Outline => {
            let o = super::outline(df, build_args, target).ok_or_else(|| {
                format!(
                    "target stage {:?} could not be found",
                    target.unwrap_or_default()
                )
            })?;
            Ok(if call.json {
                json(serde_json::to_value(&o).map_err(|e| e.to_string())?)
            } else {
                o.render()
            })
        }
        Method::Targets => {
            let t = super::targets(df);
            Ok(if call.json {
                json(serde_json::json!({ "targets": t }))
            } else {
                super::render_targets(&t)
            })
        }
        Method::Build | Method::Check => {
            Err(format!("--call {:?} prints no description", call.method))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_values_like_buildx() {
        let c = Call::parse("build", false).unwrap();
        assert_eq!(c.method, Method::Build);
        assert_eq!(Call::parse("build", true).unwrap().method, Method::Check);
        let c = Call::parse("outline,format=json", false).unwrap();
        assert!(c.json && c.method == Method::Outline);
        let c = Call::parse("check,ignorestatus=true", false).unwrap();
        assert!(c.ignore_status && c.method == Method::Check);
        assert_eq!(Call::parse("lint", false).unwrap().method, Method::Check);
        assert!(Call::parse("targets", true).is_err());
        assert!(Call::parse("nope", false)
            .unwrap_err()
            .contains("unknown method"));
        assert!(Call::parse("check,format=yaml", false).is_err());
        assert!(Call::parse("check,outline", false).is_err());
    }

    #[test]
    fn describe_targets_as_json() {
        let df = crate::parse("# app the app\nFROM scratch AS app\n").unwrap();
        let call = Call::parse("targets,format=json", false).unwrap();
        let out = describe(&call, &df, &Default::default(), None).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["targets"][0]["description"], "the app");
        assert_eq!(v["targets"][0]["default"], true);
        let call = Call::parse("outline", false).unwrap();
        let e = describe(&call, &df, &Default::default(), Some("nope")).unwrap_err();
        assert_eq!(e, "target stage \"nope\" could not be found");
    }
}
