//! Build checks: each rule with a case where it fires and one where it does not, the `# check=`
//! directive, and the output as `--check` prints it (insta snapshots of the rendered report).
//!
//! Expected messages, locations and conditions follow current moby/buildkit
//! (`frontend/dockerfile/linter/ruleset.go`, `dockerfile2llb/validations.go`, `convert.go`,
//! `instructions/parse.go`) and its lint tests (`dockerfile_lint_test.go`): the lab's dockerd 20.10
//! predates build checks, so there is no local BuildKit to compare with.

use std::collections::BTreeMap;

use frontend::checks::{self, CheckOptions, Report};
use frontend::{parse, BaseImages, DockerIgnore};

/// Base images: `arm-image` is linux/arm64 and sets `GOPATH`; everything else is linux/amd64.
struct Bases;

impl BaseImages for Bases {
    fn config(&mut self, reference: &str) -> Result<oci::ImageConfig, frontend::BoxError> {
        let mut c = oci::ImageConfig::scratch();
        c.os = "linux".into();
        c.architecture = "amd64".into();
        c.config.env = Some(vec!["PATH=/usr/bin:/bin".into(), "LANG=C".into()]);
        if reference.starts_with("arm-image") {
            c.architecture = "arm64".into();
            c.config.env = Some(vec!["PATH=/bin".into(), "GOPATH=/go".into()]);
        }
        Ok(c)
    }
}

fn amd64() -> oci::Platform {
    oci::Platform {
        architecture: "amd64".into(),
        os: "linux".into(),
        variant: None,
        os_version: None,
    }
}

fn report_with(src: &str, opts: &CheckOptions<'_>) -> Report {
    let df = parse(src).unwrap_or_else(|e| panic!("{e:?}"));
    checks::run(&df, opts, &mut Bases).unwrap_or_else(|e| panic!("{e}"))
}

fn check(src: &str) -> String {
    let opts = CheckOptions {
        all_stages: true,
        platform: amd64(),
        ..CheckOptions::default()
    };
    report_with(src, &opts).render("Dockerfile", src)
}

/// The rule names that fired.
fn fired(src: &str) -> Vec<&'static str> {
    let opts = CheckOptions {
        all_stages: true,
        platform: amd64(),
        ..CheckOptions::default()
    };
    report_with(src, &opts)
        .warnings
        .iter()
        .map(|w| w.rule.name)
        .collect()
}

/// `$name_fires` snapshots the output for `$pos`; `$name_quiet` asserts `$neg` fires nothing.
macro_rules! rule {
    ($fires:ident, $quiet:ident, $pos:expr, $neg:expr) => {
        #[test]
        fn $fires() {
            insta::assert_snapshot!(check($pos));
        }
        #[test]
        fn $quiet() {
            let neg: &str = $neg;
            assert_eq!(fired(neg), Vec::<&str>::new(), "{neg}");
            assert_eq!(check(neg), "Check complete, no warnings found.\n");
        }
    };
}

rule!(
    stage_name_casing_fires,
    stage_name_casing_quiet,
    "FROM scratch AS Build\nCOPY a /a\n",
    "FROM scratch AS build\nCOPY a /a\n"
);
rule!(
    from_as_casing_fires,
    from_as_casing_quiet,
    "FROM scratch as build\nCOPY a /a\n",
    "FROM scratch AS build\nCOPY a /a\nFROM scratch AS other\n"
);
rule!(
    no_empty_continuation_fires,
    no_empty_continuation_quiet,
    "FROM scratch\nLABEL a=1 \\\n\n  b=2\nCOPY a /a\n",
    "FROM scratch\nLABEL a=1 \\\n  b=2\nCOPY a /a\n"
);
rule!(
    consistent_instruction_casing_fires,
    consistent_instruction_casing_quiet,
    "FROM scratch\ncopy a /a\nCOPY b /b\nLabel c=d\n",
    "from scratch\ncopy a /a\nlabel c=d\n"
);
rule!(
    duplicate_stage_name_fires,
    duplicate_stage_name_quiet,
    "FROM scratch AS a\nCOPY a /a\nFROM scratch AS a\nCOPY b /b\n",
    "FROM scratch AS a\nCOPY a /a\nFROM scratch AS b\nCOPY b /b\n"
);
rule!(
    reserved_stage_name_fires,
    reserved_stage_name_quiet,
    "FROM scratch AS context\nCOPY a /a\n",
    "FROM scratch AS contexts\nCOPY a /a\n"
);
rule!(
    json_args_recommended_fires,
    json_args_recommended_quiet,
    "FROM busybox\nENTRYPOINT my-app --serve\nCMD echo hi\n",
    "FROM busybox\nENTRYPOINT [\"my-app\"]\nCMD [\"--serve\"]\nFROM busybox\nSHELL [\"/bin/bash\", \"-c\"]\nCMD echo hi\n"
);
rule!(
    maintainer_deprecated_fires,
    maintainer_deprecated_quiet,
    "FROM scratch\nMAINTAINER me <me@example.com>\n",
    "FROM scratch\nLABEL org.opencontainers.image.authors=\"me@example.com\"\n"
);
rule!(
    undefined_arg_in_from_fires,
    undefined_arg_in_from_quiet,
    "ARG VERSION=1\nFROM busybox:${VERSON}\nFROM busybox:${TARGETARCH}-$NOPE\n",
    "ARG VERSION=1\nARG UNSET\nFROM busybox:${VERSION}${UNSET}\nFROM --platform=$BUILDPLATFORM busybox:${TARGETARCH}\n"
);
rule!(
    workdir_relative_path_fires,
    workdir_relative_path_quiet,
    "FROM busybox\nWORKDIR app\nWORKDIR sub\n",
    "FROM busybox AS base\nWORKDIR /app\nWORKDIR sub\nFROM base\nWORKDIR more\n"
);
rule!(
    undefined_var_fires,
    undefined_var_quiet,
    "FROM busybox\nENV PATH=$PAHT:/opt/bin\nCOPY $SRC /dst\nARG TARGETARCH\nWORKDIR /$TARGETOS/$TARGETARCH\n",
    "FROM busybox\nARG SRC\nENV PATH=$PATH:/opt/bin A=$LANG\nCOPY $SRC /dst\nRUN echo $UNDEFINED_IN_RUN_IS_FOR_THE_SHELL\nFROM --platform=linux/arm64 arm-image AS arm64\nENV BIN=$GOPATH/bin\n"
);
rule!(
    multiple_instructions_disallowed_fires,
    multiple_instructions_disallowed_quiet,
    "FROM busybox\nCMD [\"a\"]\nHEALTHCHECK NONE\nCMD [\"b\"]\nHEALTHCHECK NONE\n",
    "FROM busybox\nCMD [\"a\"]\nENTRYPOINT [\"b\"]\nFROM busybox\nCMD [\"c\"]\n"
);
rule!(
    legacy_key_value_format_fires,
    legacy_key_value_format_quiet,
    "FROM scratch\nENV A 1\nLABEL b 2\n",
    "FROM scratch\nENV A=1\nLABEL b=2\n"
);
rule!(
    invalid_base_image_platform_fires,
    invalid_base_image_platform_quiet,
    "FROM arm-image\nCOPY a /a\n",
    "FROM --platform=linux/arm64 arm-image AS build-arm64\nCOPY a /a\nFROM busybox\n"
);
rule!(
    redundant_target_platform_fires,
    redundant_target_platform_quiet,
    "FROM --platform=$TARGETPLATFORM busybox\n",
    "FROM --platform=$BUILDPLATFORM busybox\n"
);
rule!(
    secrets_used_in_arg_or_env_fires,
    secrets_used_in_arg_or_env_quiet,
    "FROM scratch\nARG GITHUB_TOKEN\nENV API_KEY=x aws_secret_key=y\n",
    "FROM scratch\nARG PUBLIC_KEY\nARG TOKENIZER\nENV PASSWORD_FILE=/run/secrets/pw\n"
);
rule!(
    invalid_default_arg_in_from_fires,
    invalid_default_arg_in_from_quiet,
    "ARG TAG\nARG IMAGE\nFROM busybox:${TAG}\nFROM ${IMAGE}\n",
    "ARG TAG=1.36\nARG IMAGE=alpine\nFROM busybox:${TAG}\nFROM ${IMAGE}\n"
);
rule!(
    from_platform_flag_const_disallowed_fires,
    from_platform_flag_const_disallowed_quiet,
    "FROM --platform=linux/amd64 busybox AS build\n",
    "FROM --platform=linux/amd64 busybox AS build_amd64\nFROM --platform=linux/arm64 arm-image AS linux\n"
);
rule!(
    invalid_definition_description_fires,
    invalid_definition_description_quiet,
    "# check=experimental=InvalidDefinitionDescription\nFROM scratch\n# the version\nARG VERSION=1\n# a stage\nFROM scratch AS build\n",
    "# check=experimental=all\nFROM scratch\n# VERSION the version\nARG VERSION=1\n# build a stage\nFROM scratch AS build\n# a comment\n#\nARG OTHER\n"
);
rule!(
    expose_proto_casing_fires,
    expose_proto_casing_quiet,
    "FROM scratch\nEXPOSE 80/TCP 53/udp\n",
    "FROM scratch\nEXPOSE 80/tcp 53/udp 8080\n"
);
rule!(
    expose_invalid_format_fires,
    expose_invalid_format_quiet,
    "FROM scratch\nEXPOSE 127.0.0.1:80:80 8080:80/tcp\n",
    "FROM scratch\nEXPOSE 80 8000-8010\n"
);

fn with_ignore(src: &str, ignore: &str) -> Vec<String> {
    let ignore = DockerIgnore::parse(ignore);
    let opts = CheckOptions {
        all_stages: true,
        platform: amd64(),
        dockerignore: Some(&ignore),
        ..CheckOptions::default()
    };
    report_with(src, &opts)
        .warnings
        .iter()
        .map(|w| w.short())
        .collect()
}

#[test]
fn copy_ignored_file_fires() {
    let src =
        "FROM scratch\nCOPY secret.txt ./src/ /app/\nADD --chmod=644 ./logs/today.log /logs/\n";
    let ignore = DockerIgnore::parse("secret.txt\nlogs\n");
    let opts = CheckOptions {
        all_stages: true,
        platform: amd64(),
        dockerignore: Some(&ignore),
        ..CheckOptions::default()
    };
    insta::assert_snapshot!(report_with(src, &opts).render("Dockerfile", src));
}

#[test]
fn copy_ignored_file_quiet() {
    let src = "FROM scratch AS b\nCOPY . /app/\nCOPY src/ /app/\nCOPY --from=b secret.txt /x\n";
    assert_eq!(with_ignore(src, "secret.txt\nlogs\n"), Vec::<String>::new());
    // With a `!` exception BuildKit does not decide statically.
    let src = "FROM scratch\nCOPY secret.txt /app/\n";
    assert_eq!(with_ignore(src, "*.txt\n!keep.txt\n"), Vec::<String>::new());
    // Without a .dockerignore nothing is ignored.
    assert_eq!(fired(src), Vec::<&str>::new());
    // The context root only when everything is ignored.
    assert_eq!(
        with_ignore("FROM scratch\nCOPY . /app/\n", "*\n"),
        vec!["CopyIgnoredFile: Attempting to Copy file \".\" that is excluded by .dockerignore (line 2)"]
    );
}

#[test]
fn check_directive_skips_rules() {
    let src = "# check=skip=JSONArgsRecommended,FromAsCasing\nFROM busybox as build\nCMD echo hi\nMAINTAINER me\n";
    assert_eq!(fired(src), vec!["MaintainerDeprecated"]);
    let src = "# check=skip=all\nFROM busybox as build\nCMD echo hi\n";
    assert_eq!(fired(src), Vec::<&str>::new());
}

#[test]
fn check_comment_above_an_instruction_skips_for_it() {
    let src = "FROM busybox\n# check=skip=JSONArgsRecommended\nCMD echo hi\nENTRYPOINT echo hi\n";
    let df = parse(src).unwrap();
    let opts = CheckOptions {
        all_stages: true,
        platform: amd64(),
        ..CheckOptions::default()
    };
    let r = checks::run(&df, &opts, &mut Bases).unwrap();
    let lines: Vec<(&str, usize)> = r.warnings.iter().map(|w| (w.rule.name, w.line)).collect();
    assert_eq!(lines, vec![("JSONArgsRecommended", 4)]);
}

#[test]
fn check_error_true_makes_warnings_an_error() {
    let src = "# check=error=true\nFROM busybox as build\nMAINTAINER me\n";
    insta::assert_snapshot!(check(src));
    let df = parse(src).unwrap();
    let r = checks::run(&df, &CheckOptions::default(), &mut Bases).unwrap();
    assert_eq!(
        r.error().as_deref(),
        Some("lint violation found for rules: FromAsCasing, MaintainerDeprecated")
    );
    // error=true without warnings is no error.
    let df = parse("# check=error=true\nFROM busybox\n").unwrap();
    let r = checks::run(&df, &CheckOptions::default(), &mut Bases).unwrap();
    assert_eq!(r.error(), None);
}

#[test]
fn buildkit_dockerfile_check_arg_replaces_the_directive() {
    let src = "# check=skip=all\nFROM busybox as build\nMAINTAINER me\n";
    let opts = CheckOptions {
        build_args: BTreeMap::from([(
            checks::CHECK_BUILD_ARG.to_owned(),
            "skip=MaintainerDeprecated;error=true".to_owned(),
        )]),
        ..CheckOptions::default()
    };
    let r = report_with(src, &opts);
    assert_eq!(
        r.error().as_deref(),
        Some("lint violation found for rules: FromAsCasing")
    );
    let opts = CheckOptions {
        build_args: BTreeMap::from([(checks::CHECK_BUILD_ARG.to_owned(), "bogus".to_owned())]),
        ..CheckOptions::default()
    };
    let df = parse(src).unwrap();
    let e = checks::run(&df, &opts, &mut Bases).unwrap_err();
    assert_eq!(
        e.message,
        "failed to parse BUILDKIT_DOCKERFILE_CHECK: invalid check option \"bogus\""
    );
}

#[test]
fn invalid_check_directive_is_an_error() {
    let df = parse("# check=skip=A;oops=1\nFROM busybox\n").unwrap();
    let e = checks::run(&df, &CheckOptions::default(), &mut Bases).unwrap_err();
    assert_eq!(
        e.message,
        "failed to parse check options: invalid check option \"oops\""
    );
}

#[test]
fn a_normal_build_checks_only_the_stages_it_builds() {
    // BuildKit dispatches only the target's stages outside of --check; parse-time rules still run on all.
    let src = "FROM busybox AS unused\nCMD echo never built\nFROM busybox as build\nCOPY a /a\n";
    let df = parse(src).unwrap();
    let build = CheckOptions {
        platform: amd64(),
        ..CheckOptions::default()
    };
    let names: Vec<&str> = checks::run(&df, &build, &mut Bases)
        .unwrap()
        .warnings
        .iter()
        .map(|w| w.rule.name)
        .collect();
    assert_eq!(names, vec!["FromAsCasing"]);
    assert_eq!(fired(src), vec!["JSONArgsRecommended", "FromAsCasing"]);
}

#[test]
fn summary_at_the_end_of_a_build() {
    let src = "FROM busybox as build\nMAINTAINER me\n";
    let df = parse(src).unwrap();
    let r = checks::run(&df, &CheckOptions::default(), &mut Bases).unwrap();
    insta::assert_snapshot!(r.summary(), @r"
     2 warnings found:
     - FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)
     - MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 2)
    ");
}

#[test]
fn json_report_like_buildkit_lint_result() {
    let src = "FROM busybox as build\n";
    let df = parse(src).unwrap();
    let r = checks::run(&df, &CheckOptions::default(), &mut Bases).unwrap();
    insta::assert_snapshot!(serde_json::to_string_pretty(&r.to_json("Dockerfile", src)).unwrap());
}

/// Cases from BuildKit's own lint tests (`frontend/dockerfile/dockerfile_check_test.go`): the rules
/// that fire and their lines.
#[test]
fn buildkit_lint_test_cases() {
    let cases: &[(&str, &[(&str, usize)])] = &[
        ("\nARG base=scratch\nFROM $base\nCOPY Dockerfile .\n", &[]),
        ("\nARG BUILDPLATFORM=linux/amd64\nFROM --platform=$BUILDPLATFORM scratch\nCOPY Dockerfile .\n", &[]),
        ("\nARG DEBUG\nFROM scratch${DEBUG}\nCOPY Dockerfile .\n", &[]),
        ("\nARG DEBUG\nFROM scra${DEBUG:-tch}\nCOPY Dockerfile .\n", &[]),
        ("\nARG DEBUG=\"\"\nFROM scratch${DEBUG-@bogus}\nCOPY Dockerfile .\n", &[]),
        ("\nFROM --platform=$BULIDPLATFORM scratch\nCOPY Dockerfile .\n", &[("UndefinedArgInFrom", 2)]),
        ("\nARG MY_OS=linux\nARG MY_ARCH=amd64\nFROM --platform=linux/${MYARCH} busybox\nCOPY Dockerfile .\n", &[("UndefinedArgInFrom", 4)]),
        ("\nARG tag=latest\nFROM busybox:${tag}${version} AS b\nCOPY Dockerfile .\n", &[("UndefinedArgInFrom", 3)]),
        ("\nFROM scratch AS a\nWORKDIR /app\n\nFROM a AS b\nWORKDIR subdir/\n", &[]),
        ("\nFROM scratch\n# check=skip=WorkdirRelativePath\nWORKDIR app/\n", &[]),
        ("\nFROM scratch\nARG foo\nCOPY Dockerfile${foo} .\n", &[]),
        ("\nFROM alpine AS base\nARG foo=Dockerfile\n\nFROM base\nCOPY $foo .\n", &[]),
        ("\nFROM alpine\nRUN echo $PATH\n", &[]),
        ("\nFROM alpine\nCOPY $foo .\nARG foo=bar\nRUN echo $foo\n", &[("UndefinedVar", 3)]),
        ("\nFROM alpine\nARG DIR_BINARIES=binaries/\nARG DIR_ASSETS=assets/\nARG DIR_CONFIG=config/\nCOPY $DIR_ASSET .\n", &[("UndefinedVar", 6)]),
        ("#check=skip=all\nFROM scratch as base\ncopy Dockerfile .\n", &[]),
        ("#check=skip=ConsistentInstructionCasing,FromAsCasing;error=true\nFROM scratch as base\ncopy Dockerfile .\n", &[]),
        ("#check=skip=ConsistentInstructionCasing\nFROM scratch as base\ncopy Dockerfile .\n", &[("FromAsCasing", 2)]),
        ("\nFROM scratch AS base\nSHELL [\"/usr/bin/customshell\"]\n\nFROM base\nCMD mycommand\n", &[]),
        ("\nFROM scratch AS BadStageName\nMAINTAINER me@example.org\n", &[("StageNameCasing", 2), ("MaintainerDeprecated", 3)]),
        ("\n# warning: stage name should be lowercase\n#\nFROM scratch AS BadStageName\n\n# warning: 'as' should match 'FROM' cmd casing.\n#\nFROM scratch as base2\n\nFROM scratch AS base3\n", &[("StageNameCasing", 4), ("FromAsCasing", 8)]),
        ("\n#\nfrom scratch AS base\n\nfrom scratch as base2\n", &[("FromAsCasing", 3)]),
        ("\nFROM scratch\n# warning: empty continuation line\nCOPY Dockerfile \\\n\n.\nCOPY Dockerfile \\\n.\n", &[("NoEmptyContinuation", 6)]),
        ("\n#\nFrom scratch as base\nFROM scratch AS base2\n", &[("ConsistentInstructionCasing", 3)]),
        ("\n#\nfrOM scratch as base\nfrom scratch as base2\n", &[("ConsistentInstructionCasing", 3)]),
        ("\nfrom scratch\nCOPY Dockerfile /foo\ncopy Dockerfile /bar\n", &[("ConsistentInstructionCasing", 3)]),
        ("\nFROM scratch\ncopy Dockerfile /foo\ncopy Dockerfile /bar\ncopy Dockerfile /baz\n", &[("ConsistentInstructionCasing", 2)]),
        ("\nFROM alpine\nRUN <<'EOT'\nenv\nEOT\n", &[]),
        ("\nFROM scratch AS b\nFROM scratch AS b\n", &[("DuplicateStageName", 3)]),
        ("\nFROM scratch AS scratch\nFROM scratch AS context\n", &[("ReservedStageName", 2), ("ReservedStageName", 3)]),
        ("\nFROM scratch\nFROM scratch AS a\n", &[]),
        ("\nFROM scratch\nENTRYPOINT [\"/myapp\"]\nCMD [\"/myapp\"]\nHEALTHCHECK CMD [\"/myapp\"]\nCOPY <<EOF /a.txt\nHello, World!\nEOF\nENTRYPOINT [\"/myotherapp\"]\nCMD [\"/myotherapp\"]\nHEALTHCHECK CMD [\"/myotherapp\"]\n", &[("MultipleInstructionsDisallowed", 3), ("MultipleInstructionsDisallowed", 4), ("MultipleInstructionsDisallowed", 5)]),
        ("\nFROM scratch AS a\nENTRYPOINT [\"/myapp\"]\nCMD [\"/myapp\"]\n\nFROM a AS b\nENTRYPOINT [\"/myotherapp\"]\nCMD [\"/myotherapp\"]\n", &[]),
        ("\nFROM scratch\n# check=skip=LegacyKeyValueFormat\nENV testkey value\n# check=skip=LegacyKeyValueFormat\nLABEL key value\n", &[]),
        ("\nFROM --platform=${TARGETPLATFORM} scratch\n", &[("RedundantTargetPlatform", 2)]),
        ("\n# check=skip=RedundantTargetPlatform\nFROM --platform=$TARGETPLATFORM scratch\n", &[]),
        ("\nARG SFX=\"box:\"\nFROM busy${SFX}\n", &[("InvalidDefaultArgInFrom", 3)]),
        ("\nARG VERSION=\"latest\"\nFROM busybox:${VERSION}\n", &[]),
        ("\nARG BUSYBOX_VARIANT=\"\"\nFROM busybox:stable${BUSYBOX_VARIANT}\n", &[]),
        ("\nFROM --platform=linux/amd64 scratch\n", &[("FromPlatformFlagConstDisallowed", 2)]),
        ("\nFROM --platform=linux/amd64 scratch AS my_amd64_stage\n", &[]),
        ("\nFROM scratch\nEXPOSE 80/TcP 8080/TCP 8080/udp\n", &[("ExposeProtoCasing", 3), ("ExposeProtoCasing", 3)]),
        ("\nFROM scratch\nEXPOSE 127.0.0.1:80:80 [::1]:8080:8080 5000:5000 8000\n", &[("ExposeInvalidFormat", 3), ("ExposeInvalidFormat", 3), ("ExposeInvalidFormat", 3)]),
    ];
    for (src, want) in cases {
        let opts = CheckOptions {
            all_stages: true,
            platform: amd64(),
            ..CheckOptions::default()
        };
        let got: Vec<(&str, usize)> = report_with(src, &opts)
            .warnings
            .iter()
            .map(|w| (w.rule.name, w.line))
            .collect();
        assert_eq!(got, *want, "{src}");
    }
    let src =
        "\nARG DIR_BINARIES=binaries/\nFROM alpine\nARG DIR_ASSETS=assets/\nCOPY $DIR_ASSET .\n";
    let r = report_with(src, &CheckOptions::default());
    assert_eq!(
        r.warnings[0].message,
        "Usage of undefined variable '$DIR_ASSET' (did you mean $DIR_ASSETS?)"
    );
}

/// BuildKit's `testSecretsUsedInArgOrEnv`, comment-level `# check=` included.
#[test]
fn buildkit_secrets_case() {
    let src = "# check=skip=InvalidDefinitionDescription

FROM scratch
ARG SECRET_PASSPHRASE
ENV SUPER_Secret=foo
ENV password=bar secret=baz
ARG super_duper_secret_token=foo auth=bar
ENV apikey=bar sunflower=foo
ENV git_key=
ENV PUBLIC_KEY=
ARG public_token
ARG SECRET_PASSPHRASE_FILE
ENV password_file=bar secret_File=baz
ARG AUTH_MODULE_VERSION
# check=skip=SecretsUsedInArgOrEnv // allow secret in environment
ENV password=bar
# check=skip=SecretsUsedInArgOrEnv // allow secret in arg
ARG password
# check=skip=all // is local to only this instruction
ENV alternate_password=bar
# check=skip=all // is local to only this instruction
ARG alternate_password
";
    let mut got: Vec<(usize, String)> = report_with(src, &CheckOptions::default())
        .warnings
        .iter()
        .map(|w| (w.line, w.message.clone()))
        .collect();
    got.sort();
    let want: Vec<(usize, String)> = [
        (4, "ARG \"SECRET_PASSPHRASE\""),
        (5, "ENV \"SUPER_Secret\""),
        (6, "ENV \"password\""),
        (6, "ENV \"secret\""),
        (7, "ARG \"auth\""),
        (7, "ARG \"super_duper_secret_token\""),
        (8, "ENV \"apikey\""),
        (9, "ENV \"git_key\""),
    ]
    .iter()
    .map(|(l, m)| {
        (
            *l,
            format!("Do not use ARG or ENV instructions for sensitive data ({m})"),
        )
    })
    .collect();
    assert_eq!(got, want);
}

/// BuildKit's `testCopyIgnoredFiles` and `testCopyIgnoredFileContextRoot`.
#[test]
fn buildkit_copy_ignored_cases() {
    let src = "\nFROM scratch\nCOPY Dockerfile .\nADD Dockerfile /windy\n";
    assert_eq!(
        with_ignore(src, "\nDockerfile\n"),
        vec![
            "CopyIgnoredFile: Attempting to Copy file \"Dockerfile\" that is excluded by .dockerignore (line 3)",
            "CopyIgnoredFile: Attempting to Add file \"Dockerfile\" that is excluded by .dockerignore (line 4)",
        ]
    );
    let skipped = "# check=skip=CopyIgnoredFile\n\nFROM scratch\nCOPY Dockerfile .\n";
    assert_eq!(with_ignore(skipped, "Dockerfile\n"), Vec::<String>::new());
    let from = "\nFROM scratch AS base\nCOPY Dockerfile /foobar\n\nFROM base\nCOPY --from=base /foobar /Dockerfile\n";
    assert_eq!(with_ignore(from, "foobar\n"), Vec::<String>::new());
    let negated = "\nFROM scratch\nCOPY ./Dockerfile .\nCOPY . .\n";
    assert_eq!(
        with_ignore(negated, "**\n!Dockerfile\n"),
        Vec::<String>::new()
    );
    let root = "\nFROM scratch\nCOPY . .\n";
    assert_eq!(with_ignore(root, ".*\n"), Vec::<String>::new());
    assert_eq!(with_ignore(root, "*\n").len(), 1);
}

#[test]
fn invalid_base_image_platform_names_the_expanded_image_and_platform() {
    let src = "ARG IMG=arm-image\nFROM --platform=$BUILDPLATFORM ${IMG}\n";
    let r = report_with(
        src,
        &CheckOptions {
            platform: amd64(),
            ..CheckOptions::default()
        },
    );
    let msgs: Vec<&str> = r.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(
        msgs,
        vec!["Base image arm-image was pulled with platform \"linux/arm64\", expected \"linux/amd64\" for current build"]
    );
}

/// BuildKit's `testWarningsBeforeError`: the parse-time rules on the lines before a parse error.
#[test]
fn warnings_before_a_parse_error() {
    let src = "\nFROM scratch AS BadStageName\nMAINTAINER me@example.org\nBADCMD\nENV A 1\n";
    assert!(parse(src).is_err());
    let out = checks::before_parse_error(src, "Dockerfile", &CheckOptions::default());
    assert!(
        out.starts_with("Check complete, 2 warnings have been found!\n"),
        "{out}"
    );
    assert!(
        out.contains("Stage name 'BadStageName' should be lowercase\nDockerfile:2\n"),
        "{out}"
    );
    assert!(out.contains("WARNING: MaintainerDeprecated"), "{out}");
    assert!(!out.contains("LegacyKeyValueFormat"), "{out}");
    assert_eq!(
        checks::before_parse_error("FROM\nBADCMD\n", "Dockerfile", &CheckOptions::default()),
        ""
    );
}
