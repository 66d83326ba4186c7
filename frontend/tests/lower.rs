//! Lowering semantics: stages, ARG/ENV scoping, configs, mounts and node names.

use std::collections::BTreeMap;

use frontend::{lower, parse, Base, BaseImages, LowerOptions, Lowered};
use graph::{CopySource, Mount, Op};

struct Bases {
    requested: Vec<String>,
    base: oci::ImageConfig,
}

impl Bases {
    fn new() -> Self {
        let mut base = oci::ImageConfig::scratch();
        base.config.env = Some(vec!["PATH=/bin".into(), "LANG=C".into()]);
        base.config.cmd = Some(vec!["sh".into()]);
        base.config.working_dir = Some("/home".into());
        base.history.push(oci::History {
            created_by: Some("base".into()),
            ..Default::default()
        });
        Self {
            requested: Vec::new(),
            base,
        }
    }
}

impl BaseImages for Bases {
    fn config(&mut self, reference: &str) -> Result<oci::ImageConfig, frontend::BoxError> {
        self.requested.push(reference.to_owned());
        if reference.starts_with("missing") {
            return Err("manifest unknown".into());
        }
        Ok(self.base.clone())
    }
}

fn build(src: &str, args: &[(&str, &str)], target: Option<&str>) -> (Lowered, Vec<String>) {
    let df = parse(src).unwrap();
    let opts = LowerOptions {
        build_args: args
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        target: target.map(str::to_owned),
        ..LowerOptions::default()
    };
    let mut bases = Bases::new();
    let l = lower(&df, &opts, &mut bases).unwrap_or_else(|e| panic!("{e:?}"));
    (l, bases.requested)
}

fn exec(l: &Lowered, id: graph::NodeId) -> graph::Exec {
    match &l.graph.node(id).op {
        Op::Exec(e) => e.clone(),
        other => panic!("not an exec: {other:?}"),
    }
}

#[test]
fn only_needed_stages_are_lowered_and_requested() {
    let src = "FROM a AS one\nRUN x\nFROM b AS two\nRUN y\nFROM c\nCOPY --from=one /x /x\n";
    let (l, requested) = build(src, &[], None);
    assert_eq!(requested, vec!["c", "a"]);
    assert_eq!(l.stages.len(), 2);
    assert_eq!(l.stages[l.target].index, 2);
    assert_eq!(l.stages[0].name.as_deref(), Some("one"));
    let head = l.graph.node(l.stages[l.target].head);
    assert_eq!(head.inputs.len(), 2);
    assert_eq!(head.inputs[1], l.stages[0].head);
    assert_eq!(head.name.to_string(), "[stage-2 2/2] COPY --from=one /x /x");

    let (l, requested) = build(src, &[], Some("TWO"));
    assert_eq!(requested, vec!["b"]);
    assert_eq!(l.stages.len(), 1);
    assert_eq!(
        l.graph.node(l.stages[0].head).name.to_string(),
        "[two 2/2] RUN y"
    );
}

#[test]
fn missing_target_and_base_errors() {
    let df = parse("FROM a AS x\n").unwrap();
    let opts = LowerOptions {
        target: Some("nope".into()),
        ..LowerOptions::default()
    };
    let errs = lower(&df, &opts, &mut Bases::new()).unwrap_err();
    assert_eq!(errs[0].message, "target stage \"nope\" could not be found");
    assert_eq!(errs[0].help.as_deref(), Some("stages are: x"));

    let df = parse("FROM missing:1\nRUN x\n").unwrap();
    let errs = lower(&df, &LowerOptions::default(), &mut Bases::new()).unwrap_err();
    assert!(errs[0].message.contains("manifest unknown"), "{errs:?}");
    assert_eq!(errs[0].span.line, 1);
}

#[test]
fn arg_and_env_scoping() {
    let src = "ARG IMG=alpine\nARG TAG\nFROM ${IMG}:${TAG:-latest}\nARG TAG\nARG A=1\nENV B=$A\nARG B=arg\nRUN echo $A\n";
    let (l, requested) = build(src, &[("TAG", "3.20")], None);
    assert_eq!(requested, vec!["alpine:3.20"]);
    let st = &l.stages[0];
    let e = exec(&l, st.head);
    // Image ENV first, then ARGs; an ARG assigned after an ENV of the same name wins in the RUN's
    // environment, as in BuildKit (lab: `ENV B=1`, `ARG B=arg`, `RUN echo $B` prints `arg`); ARGs
    // never enter the image config.
    assert_eq!(
        e.env,
        vec!["PATH=/bin", "LANG=C", "B=arg", "TAG=3.20", "A=1"]
    );
    assert_eq!(
        st.config.config.env.as_ref().unwrap(),
        &vec!["PATH=/bin", "LANG=C", "B=1"]
    );
    assert_eq!(e.cwd, "/home");
    let last = st.config.history.last().unwrap();
    assert_eq!(
        last.created_by.as_deref(),
        Some("RUN |3 TAG=3.20 A=1 B=arg /bin/sh -c echo $A # buildkit")
    );
    assert!(!last.empty_layer);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);

    let (l, _) = build("FROM scratch\nRUN x\n", &[("UNUSED", "1")], None);
    assert!(l.warnings[0].message.contains("UNUSED"));
}

#[test]
fn scratch_gets_default_path_and_metadata() {
    let src = "FROM scratch\nCMD [\"a\"]\nENTRYPOINT /e\nEXPOSE 80 53/udp\nUSER app\n";
    let (l, requested) = build(src, &[], None);
    assert!(requested.is_empty());
    let c = &l.stages[0].config;
    assert_eq!(
        c.config.env_get("PATH"),
        Some("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    );
    // CMD set in this stage survives ENTRYPOINT.
    assert_eq!(c.config.cmd.as_deref().unwrap(), &["a".to_owned()]);
    assert_eq!(
        c.config.entrypoint.as_deref().unwrap(),
        &["/bin/sh".to_owned(), "-c".into(), "/e".into()]
    );
    let ports: Vec<&String> = c.config.exposed_ports.as_ref().unwrap().keys().collect();
    assert_eq!(ports, vec!["53/udp", "80/tcp"]);
    assert_eq!(l.stages[0].base, Base::Scratch);
    assert!(l.stages[0].layer_history.is_empty());
    assert!(c.history.iter().all(|h| h.empty_layer));
}

#[test]
fn entrypoint_resets_inherited_cmd() {
    let (l, _) = build("FROM img\nENTRYPOINT [\"/app\"]\n", &[], None);
    assert_eq!(l.stages[0].config.config.cmd, None);
    assert_eq!(
        l.stages[0].config.history[0].created_by.as_deref(),
        Some("base")
    );
}

#[test]
fn copy_dest_and_flags() {
    let src = "FROM img\nWORKDIR /app\nCOPY . .\nCOPY a b sub/\nADD --chmod=640 x.tar rel\nCOPY --from=other:1 /x /abs\n";
    let (l, _) = build(src, &[], None);
    let nodes: Vec<&graph::Node> = l
        .graph
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::Copy(_)))
        .collect();
    let copy = |i: usize| match &nodes[i].op {
        Op::Copy(c) => c.clone(),
        _ => unreachable!(),
    };
    assert_eq!(copy(0).dest, "/app/");
    assert_eq!(copy(1).dest, "/app/sub/");
    assert_eq!(copy(1).srcs, vec!["a", "b"]);
    assert_eq!(copy(2).dest, "/app/rel");
    assert_eq!(copy(2).chmod, Some(0o640));
    assert!(copy(2).unpack);
    assert_eq!(copy(3).source, CopySource::Input { index: 1 });
    let img = l.graph.node(nodes[3].inputs[1]);
    assert_eq!(
        img.op,
        Op::Image {
            reference: "other:1".into(),
            platform: None,
        }
    );
    let st = &l.stages[0];
    assert_eq!(st.layer_history.len(), 5);
    assert_eq!(
        st.config.history[st.layer_history[1].0]
            .created_by
            .as_deref(),
        Some("COPY . . # buildkit")
    );
}

#[test]
fn run_mount_defaults() {
    let src = "FROM img\nRUN --mount=type=cache,target=/c --mount=type=ssh --mount=type=secret,target=/s/tok,required x\n";
    let (l, _) = build(src, &[], None);
    let e = exec(&l, l.stages[0].head);
    assert_eq!(
        e.mounts[0],
        Mount::Cache {
            id: "/c".into(),
            target: "/c".into(),
            readonly: false,
            sharing: graph::Sharing::Shared,
            mode: 0o755,
            uid: 0,
            gid: 0,
            from: None,
            source: String::new(),
        }
    );
    assert_eq!(
        e.mounts[1],
        Mount::Ssh {
            id: "default".into(),
            target: "/run/buildkit/ssh_agent.0".into(),
            required: false
        }
    );
    assert!(
        matches!(&e.mounts[2], Mount::Secret { id, required: true, mode: 0o400, .. } if id == "tok")
    );
    assert_eq!(e.args, vec!["/bin/sh", "-c", "x"]);

    let df =
        parse("FROM img\nRUN --mount=type=bogus,target=/x y\nRUN --network=weird z\n").unwrap();
    let errs = lower(&df, &LowerOptions::default(), &mut Bases::new()).unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:?}");
}

#[test]
fn node_names_expand_variables_and_pad_steps() {
    let mut src = String::from("FROM img\nENV D=/data\nWORKDIR $D\n");
    for i in 0..8 {
        src.push_str(&format!("RUN echo {i}\n"));
    }
    let (l, _) = build(&src, &[], None);
    let names: Vec<String> = l.graph.nodes().iter().map(|n| n.name.to_string()).collect();
    assert_eq!(names[0], "[ 1/11] FROM img");
    assert_eq!(names[1], "[ 3/11] WORKDIR /data");
    assert_eq!(names[9], "[11/11] RUN echo 7");
    assert!(l.graph.nodes().iter().all(|n| n.span.is_some()));
    // The identity of a step names its place, not its text (miss explanations rely on it).
    assert_eq!(l.graph.nodes()[9].name.identity().as_deref(), Some("11"));
    assert_eq!(l.graph.nodes()[9].name.instruction(), "RUN echo 7");
}

#[test]
fn onbuild_triggers_of_base_run_first() {
    let df = parse("FROM img\nRUN mine\n").unwrap();
    let mut bases = Bases::new();
    bases.base.config.on_build = Some(vec!["RUN echo trigger".into()]);
    let l = lower(&df, &LowerOptions::default(), &mut bases).unwrap();
    let runs: Vec<Vec<String>> = l
        .graph
        .nodes()
        .iter()
        .filter_map(|n| match &n.op {
            Op::Exec(e) => Some(e.args.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(runs[0][2], "echo trigger");
    assert_eq!(runs[1][2], "mine");
    assert_eq!(l.stages[0].config.config.on_build, None);
}

#[test]
fn run_names_keep_the_instruction_as_written() {
    let src = "FROM img AS build\nARG WHO=you\nrun tr 'a-z' 'A-Z' < greeting.txt\n\
               RUN [\"/bin/busybox\", \"mkdir\", \"-p\", \"/x\"]\n\
               RUN echo \"hi $WHO\" $UNSET ${ALSO_UNSET:-d} > /o\n\
               COPY \"a\" /c/\n";
    let (l, _) = build(src, &[], None);
    let names: Vec<String> = l.graph.nodes().iter().map(|n| n.name.to_string()).collect();
    assert_eq!(
        names,
        vec![
            "[1/6] FROM img",
            "[3/6] RUN tr 'a-z' 'A-Z' < greeting.txt",
            r#"[4/6] RUN ["/bin/busybox", "mkdir", "-p", "/x"]"#,
            r#"[5/6] RUN echo "hi you" $UNSET ${ALSO_UNSET:-d} > /o"#,
            // COPY/ADD/WORKDIR names are expanded with quotes removed, as BuildKit prints them.
            "[6/6] COPY a /c/",
        ]
    );
}

#[test]
fn copy_parents_and_several_heredocs_lower_to_one_copy() {
    let src = "FROM img\nCOPY --parents src/./app/*.js /dst/\n\
               COPY <<A <<\"B\" file.txt /multi/\nfirst $X\nA\nsecond $X\nB\n\
               COPY <<only /one\nbody\nonly\n";
    let (l, _) = build(src, &[], None);
    let copies: Vec<&graph::Copy> = l
        .graph
        .nodes()
        .iter()
        .filter_map(|n| match &n.op {
            Op::Copy(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(copies.len(), 3);
    assert!(copies[0].parents);
    assert_eq!(copies[0].srcs, vec!["src/./app/*.js"]);
    assert_eq!(copies[1].source, CopySource::Context);
    assert_eq!(copies[1].srcs, vec!["file.txt"]);
    let inline: Vec<(&str, &str)> = copies[1]
        .inline
        .iter()
        .map(|f| (f.name.as_str(), f.content.as_str()))
        .collect();
    assert_eq!(inline, vec![("A", "first \n"), ("B", "second $X\n")]);
    assert!(!copies[2].parents && copies[2].inline.is_empty());
    assert!(
        matches!(&copies[2].source, CopySource::Inline { name, content } if name == "only" && content == "body\n")
    );
    let history: Vec<&str> = l.stages[0]
        .config
        .history
        .iter()
        .filter_map(|h| h.created_by.as_deref())
        .collect();
    assert!(
        history.contains(&"COPY --parents src/./app/*.js /dst/ # buildkit"),
        "{history:?}"
    );
    assert!(
        history.contains(&"COPY file.txt <<A <<B /multi/ # buildkit"),
        "{history:?}"
    );
}

#[test]
fn syntax_directive_other_than_dockerfile_1_is_refused_before_lowering() {
    let df = parse("# syntax=docker/dockerfile:1.6\nFROM img\n").unwrap();
    assert!(lower(&df, &LowerOptions::default(), &mut Bases::new()).is_ok());
    let df = parse("# syntax=someone/else\nFROM img\n").unwrap();
    let mut bases = Bases::new();
    let errs = lower(&df, &LowerOptions::default(), &mut bases).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(
        errs[0].message,
        "external frontends are not supported: # syntax=someone/else"
    );
    assert_eq!(errs[0].span.line, 1);
    assert!(bases.requested.is_empty(), "no base image resolved");
}

/// #17 item 1, checked in the lab (dockerd 20.10's BuildKit, `docker build` of this Dockerfile on
/// busybox: B.txt holds `dev:: base-dev`, C.txt `custom:: base-dev`) and in current BuildKit's
/// source (dockerfile2llb `dispatchState.init` appends the base stage's build args and takes its
/// LLB env; `dispatchArg` adds an ARG to that env only when it has a value).
#[test]
fn args_are_inherited_from_the_parent_stage() {
    let src = "ARG OTHER=\"fix\"\nFROM busybox AS base\nARG NAME=\"base\"\n\
               FROM base AS base-dev\nARG NAME=\"$NAME-dev\"\nRUN echo \"dev:: $NAME\" >> /B.txt\n\
               FROM base-dev AS base-custom\nARG NAME\nRUN echo \"custom:: $NAME\" >> /C.txt\n\
               FROM base\nRUN echo $NAME\n";
    let (l, _) = build(src, &[], Some("base-custom"));
    let dev = l
        .stages
        .iter()
        .find(|s| s.name.as_deref() == Some("base-dev"))
        .unwrap();
    let e = exec(&l, dev.head);
    assert!(e.env.contains(&"NAME=base-dev".to_owned()), "{:?}", e.env);
    assert_eq!(
        dev.config.history.last().unwrap().created_by.as_deref(),
        Some("RUN |1 NAME=base-dev /bin/sh -c echo \"dev:: $NAME\" >> /B.txt # buildkit")
    );
    let custom = &l.stages[l.target];
    let e = exec(&l, custom.head);
    assert!(e.env.contains(&"NAME=base-dev".to_owned()), "{:?}", e.env);
    // A bare ARG records no value in its own history line.
    let h: Vec<_> = custom
        .config
        .history
        .iter()
        .filter_map(|h| h.created_by.as_deref())
        .collect();
    assert!(h.contains(&"ARG NAME"), "{h:?}");

    // A stage FROM another sees the parent's ARGs without declaring them; an image-based stage
    // does not.
    let (l, _) = build(src, &[], None);
    let e = exec(&l, l.stages[l.target].head);
    assert!(e.env.contains(&"NAME=base".to_owned()), "{:?}", e.env);
    let (l, _) = build(
        "FROM busybox\nARG NAME=x\nFROM busybox\nRUN echo $NAME\n",
        &[],
        None,
    );
    let e = exec(&l, l.stages[l.target].head);
    assert!(!e.env.iter().any(|v| v.starts_with("NAME=")), "{:?}", e.env);
    // --build-arg still wins over the inherited value.
    let (l, _) = build(src, &[("NAME", "cli")], Some("base-custom"));
    let e = exec(&l, l.stages[l.target].head);
    assert!(e.env.contains(&"NAME=cli".to_owned()), "{:?}", e.env);
}

/// #17 item 5: BuildKit's config for a scratch stage has WorkingDir "/" (lab: `docker build` of
/// `FROM scratch` + `COPY Dockerfile /`, `docker image inspect` → `"WorkingDir":"/"`; current
/// source: dockerfile2llb `emptyImage`). A stage FROM an image keeps the image's (empty) one.
#[test]
fn scratch_stage_config_has_working_dir_root() {
    let (l, _) = build("FROM scratch\nCOPY a /\n", &[], None);
    assert_eq!(l.stages[0].config.config.working_dir.as_deref(), Some("/"));
    let (l, _) = build("FROM scratch\nWORKDIR /app\n", &[], None);
    assert_eq!(
        l.stages[0].config.config.working_dir.as_deref(),
        Some("/app")
    );
    let mut bases = Bases::new();
    bases.base.config.working_dir = None;
    let df = parse("FROM busybox\nRUN x\n").unwrap();
    let l = lower(&df, &LowerOptions::default(), &mut bases).unwrap();
    assert_eq!(l.stages[0].config.config.working_dir, None);
}

/// #17 item 2: a JSON array followed by other text is not the exec form. The lab's BuildKit 0.8
/// (dockerd 20.10) decoded the first JSON value and dropped the rest (`ENTRYPOINT ["myentrypoint"]
/// # comment` became `["myentrypoint"]`); current BuildKit (dockerfile frontend 1.10.0 and later,
/// moby/buildkit 80518e2 "fix invalid usage of json.NewDecoder", test `testInvalidJSONCommands`)
/// decodes the whole rest with `json.Unmarshal`, so the text is the shell form. We follow current
/// BuildKit: the old behaviour silently dropped text the author wrote.
#[test]
fn json_form_with_trailing_text_is_the_shell_form_as_in_current_buildkit() {
    let src = "FROM scratch\nENTRYPOINT []random string\nCMD [\"a\", \"b\"] # c\n\
               SHELL [\"/bin/sh\", \"-c\"]\nRUN [\"echo\", \"hello\"]x\n";
    let (l, _) = build(src, &[], None);
    let c = &l.stages[0].config.config;
    assert_eq!(
        c.entrypoint.as_deref().unwrap(),
        &["/bin/sh".to_owned(), "-c".into(), "[]random string".into()]
    );
    assert_eq!(
        c.cmd.as_deref().unwrap(),
        &[
            "/bin/sh".to_owned(),
            "-c".into(),
            "[\"a\", \"b\"] # c".into()
        ]
    );
    let e = exec(&l, l.stages[0].head);
    assert_eq!(e.args, vec!["/bin/sh", "-c", "[\"echo\", \"hello\"]x"]);
    // A JSON array alone (spaces after it included) stays the exec form.
    let (l, _) = build("FROM scratch\nENTRYPOINT [\"e\"]   \n", &[], None);
    assert_eq!(
        l.stages[0].config.config.entrypoint.as_deref().unwrap(),
        &["e".to_owned()]
    );
}

/// Found by the differential (tests/differential/scratch-config): BuildKit sets
/// `ArgsEscaped: true` on every CMD, exec or shell form (lab: dockerd 20.10's config has it;
/// current source: dockerfile2llb `dispatchCmd`); ENTRYPOINT alone does not.
#[test]
fn cmd_sets_args_escaped_as_buildkit() {
    let (l, _) = build("FROM scratch\nCMD [\"a\"]\n", &[], None);
    assert_eq!(l.stages[0].config.config.args_escaped, Some(true));
    let (l, _) = build("FROM scratch\nCMD a b\n", &[], None);
    assert_eq!(l.stages[0].config.config.args_escaped, Some(true));
    let (l, _) = build("FROM scratch\nENTRYPOINT [\"a\"]\n", &[], None);
    assert_eq!(l.stages[0].config.config.args_escaped, None);
}

/// Found by the differential (BuildKit's testCopyChmod): `--chmod`/`--chown` that expand to nothing
/// are no flags (dockerfile2llb dispatchCopy: `if cfg.chmod != ""`), not an invalid mode.
#[test]
fn copy_flags_that_expand_to_nothing_are_ignored() {
    let (l, _) = build(
        "FROM scratch\nARG mode\nARG who\nCOPY --chmod=${mode} --chown=$who f /f\n",
        &[],
        None,
    );
    match &l.graph.node(l.stages[0].head).op {
        Op::Copy(c) => {
            assert_eq!(c.chmod, None);
            assert_eq!(c.chown, None);
        }
        other => panic!("not a copy: {other:?}"),
    }
}

/// Found by the differential, checked in the lab (`docker history` of this Dockerfile under dockerd
/// 20.10: `RUN |3 FOO= BAR=2 BAZ=arg /bin/sh -c echo hi > /x # buildkit`; current dockerfile2llb
/// `runCommandString` is the same): every ARG in scope is listed, a valueless one as `K=`, with the
/// value the last of ARG and ENV gave it.
#[test]
fn run_history_lists_valueless_args_and_the_last_of_arg_and_env() {
    let src =
        "FROM busybox\nARG FOO\nARG BAR=1\nENV BAR=2\nENV BAZ=env\nARG BAZ=arg\nRUN echo hi > /x\n";
    let (l, _) = build(src, &[], None);
    assert_eq!(
        l.stages[0]
            .config
            .history
            .last()
            .unwrap()
            .created_by
            .as_deref(),
        Some("RUN |3 FOO= BAR=2 BAZ=arg /bin/sh -c echo hi > /x # buildkit")
    );
}

/// Found by the differential (buildah's buildkit-mount-from/Dockerfilebindfromwithemptyfrom, which
/// BuildKit builds): `from=` with no value binds the context, like no `from` at all.
#[test]
fn mount_from_empty_is_the_context() {
    let (l, _) = build(
        "FROM img\nRUN --mount=type=bind,source=.,from=,target=/test x\n",
        &[],
        None,
    );
    let e = exec(&l, l.stages[0].head);
    match &e.mounts[0] {
        Mount::Bind { input, .. } => assert_eq!(*input, None),
        other => panic!("not a bind: {other:?}"),
    }
}

/// Found by the differential (buildah's shell/Dockerfile.build-shell-custom; lab: `docker history` shows
/// `SHELL [/bin/bash -c]`): BuildKit writes SHELL's history with Go's `%v` (dispatchShell).
#[test]
fn shell_history_as_buildkit() {
    let (l, _) = build("FROM scratch\nSHELL [\"/bin/bash\", \"-c\"]\n", &[], None);
    assert_eq!(
        l.stages[0]
            .config
            .history
            .last()
            .unwrap()
            .created_by
            .as_deref(),
        Some("SHELL [/bin/bash -c]")
    );
}

/// BuildKit's dockerfile2llb: `FROM --platform` (ARGs expanded) sets a stage's platform, a stage built on
/// another takes its platform, TARGET*/BUILD* come from the target and build platforms; an image node
/// for the build platform names no platform, so its key is the same for every target.
#[test]
fn from_platform_sets_each_stage_platform_and_the_platform_args() {
    let df = parse(
        "FROM --platform=$BUILDPLATFORM golang AS build\nARG TARGETARCH BUILDARCH TARGETVARIANT\n\
         RUN echo $BUILDARCH $TARGETARCH $TARGETVARIANT\n\
         FROM build AS more\nRUN true\n\
         FROM --platform=linux/s390x other AS odd\n\
         FROM alpine\nCOPY --from=more /x /x\nCOPY --from=odd /y /y\nRUN true\n",
    )
    .unwrap();
    let p = |s: &str| s.parse::<oci::Platform>().unwrap();
    let opts = LowerOptions {
        platform: p("linux/arm/v7"),
        build_platform: p("linux/amd64"),
        ..LowerOptions::default()
    };
    let l = lower(&df, &opts, &mut Bases::new()).unwrap_or_else(|e| panic!("{e:?}"));
    let platform = |name: &str| l.stage(name).unwrap().platform.to_string();
    assert_eq!(platform("build"), "linux/amd64");
    assert_eq!(platform("more"), "linux/amd64");
    assert_eq!(platform("odd"), "linux/s390x");
    assert_eq!(l.stages[l.target].platform.to_string(), "linux/arm/v7");
    let run = l.stage("build").unwrap().layer_history[0].1;
    assert!(
        exec(&l, run)
            .args
            .last()
            .unwrap()
            .ends_with("echo $BUILDARCH $TARGETARCH $TARGETVARIANT"),
        "{:?}",
        exec(&l, run).args
    );
    assert!(
        exec(&l, run).env.contains(&"BUILDARCH=amd64".to_owned()),
        "{:?}",
        exec(&l, run).env
    );
    assert!(exec(&l, run).env.contains(&"TARGETARCH=arm".to_owned()));
    assert!(exec(&l, run).env.contains(&"TARGETVARIANT=v7".to_owned()));
    let image_platform = |reference: &str| {
        l.graph
            .nodes()
            .iter()
            .find_map(|n| match &n.op {
                Op::Image {
                    reference: r,
                    platform,
                } if r == reference => Some(platform.clone()),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(image_platform("golang"), None);
    assert_eq!(image_platform("other").as_deref(), Some("linux/s390x"));
    assert_eq!(image_platform("alpine").as_deref(), Some("linux/arm/v7"));
    let runs: Vec<String> = l
        .run_platforms()
        .iter()
        .map(|(p, _)| p.to_string())
        .collect();
    assert_eq!(runs, vec!["linux/amd64", "linux/arm/v7"]);
}

#[test]
fn a_bad_from_platform_is_an_error_at_its_line() {
    let df = parse("FROM alpine\nFROM --platform=linux alpine\n").unwrap();
    let errs = lower(&df, &LowerOptions::default(), &mut Bases::new()).unwrap_err();
    assert!(
        errs[0].message.contains("invalid platform \"linux\""),
        "{}",
        errs[0].message
    );
    assert_eq!(errs[0].span.line, 2);
}

/// Follows current moby/buildkit dockerfile2llb (`toDispatchState`): a stage whose name is a
/// named context is replaced by it, its own FROM and instructions never built.
#[test]
fn named_context_replaces_the_stage_of_the_same_name() {
    let src = "FROM missing-base AS deps\nRUN make deps\n\
               FROM other AS build\nCOPY --from=deps /d /d\n\
               FROM deps\nRUN echo final\n";
    let df = parse(src).unwrap();
    let opts = LowerOptions {
        named_images: [("deps".to_owned(), "prebuilt:1".to_owned())].into(),
        ..LowerOptions::default()
    };
    let mut bases = Bases::new();
    let l = lower(&df, &opts, &mut bases).unwrap_or_else(|e| panic!("{e:?}"));
    // `missing-base` (which would fail) is never asked for; the context's image is, once.
    assert_eq!(bases.requested, vec!["prebuilt:1"]);
    let deps = l.stage("deps").unwrap();
    assert_eq!(deps.base, Base::Image("prebuilt:1".into()));
    assert!(
        matches!(&l.graph.node(deps.head).op, Op::Image { reference, .. } if reference == "prebuilt:1"),
        "no RUN make deps: {:?}",
        l.graph.node(deps.head).op
    );
    assert_eq!(l.stages[l.target].base, Base::Stage(0));
    let with_target = LowerOptions {
        target: Some("build".into()),
        ..opts
    };
    let l = lower(&df, &with_target, &mut Bases::new()).unwrap();
    let head = l.graph.node(l.stages[l.target].head);
    assert_eq!(head.inputs[1], l.stage("deps").unwrap().head);
}

/// Follows current moby/buildkit: duplicate stage names only warn (DuplicateStageName).
/// `FROM name` takes the nearest stage above (`dispatchStates.addState` at that point);
/// `COPY --from=name` and `--target` the last one of the file (`findStateByName` once all are
/// added). rbuild still refuses a `--from` that would resolve to a stage below.
#[test]
fn duplicate_stage_names_resolve_as_buildkit() {
    let src = "FROM a AS dup\nRUN echo one\n\
               FROM b AS dup\nRUN echo two\n\
               FROM dup AS from-base\n\
               FROM c AS copies\nCOPY --from=dup /x /x\n\
               FROM d AS dup\nRUN echo three\n\
               FROM e\nCOPY --from=dup /x /x\n";
    let (l, _) = build(src, &[], Some("from-base"));
    assert_eq!(l.stages[l.target].base, Base::Stage(1));
    let (l, requested) = build(src, &[], None);
    let head = l.graph.node(l.stages[l.target].head);
    assert_eq!(
        head.inputs[1],
        l.stages.iter().find(|s| s.index == 4).unwrap().head
    );
    assert_eq!(requested, vec!["e", "d"]);
    let (l, _) = build(src, &[], Some("DUP"));
    assert_eq!(l.stages[l.target].index, 4);
    // In `copies` the last `dup` is below: BuildKit would take it, rbuild says so and stops.
    let df = parse(src).unwrap();
    let opts = LowerOptions {
        target: Some("copies".into()),
        ..LowerOptions::default()
    };
    let e = lower(&df, &opts, &mut Bases::new()).unwrap_err();
    assert!(
        e[0].message.contains("\"dup\" is not defined before"),
        "{e:?}"
    );
}
