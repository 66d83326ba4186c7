use super::*;

fn file(name: &str, text: &str) -> SourceFile {
    SourceFile {
        name: name.into(),
        dir: PathBuf::new(),
        text: text.into(),
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn resolve(files: &[SourceFile], names: &[&str], sets: &[&str]) -> Result<Resolved, Error> {
    let def = load(files, &no_env)?;
    let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let sets: Vec<Override> = sets.iter().map(|s| s.parse().unwrap()).collect();
    def.resolve(&names, &sets)
}

const MONO: &str = r#"
variable "TAG" { default = "dev" }
variable "REGISTRY" { default = "" }
variable "PREFIX" { default = "${REGISTRY}mono" }
group "default" { targets = ["api", "worker", "web"] }
target "_common" {
  args = { GREETING = "hello", N = 3 }
  labels = { "org.opencontainers.image.source" = "mono" }
}
target "base" {
  context = "base"
}
target "api" {
  inherits = ["_common"]
  context = "api"
  contexts = { base = "target:base" }
  tags = ["${PREFIX}/api:${TAG}"]
}
target "worker" {
  inherits = ["_common"]
  context = "worker"
  contexts = { base = "target:base" }
  tags = ["${PREFIX}/worker:${upper(TAG)}"]
  args = { GREETING = "hi" }
}
target "web" {
  inherits = ["_common"]
  context = "web"
  contexts = { base = "target:base" }
  tags = [join("/", [PREFIX, "web:${TAG}"])]
}
"#;

#[test]
fn variables_defaults_inherits_and_functions() {
    let r = resolve(&[file("docker-bake.hcl", MONO)], &[], &[]).unwrap();
    assert_eq!(r.requested, ["api", "worker", "web"]);
    assert_eq!(r.targets["api"].tags, ["mono/api:dev"]);
    assert_eq!(r.targets["worker"].tags, ["mono/worker:DEV"]);
    assert_eq!(r.targets["web"].tags, ["mono/web:dev"]);
    assert_eq!(r.targets["api"].args["GREETING"], "hello");
    assert_eq!(r.targets["api"].args["N"], "3");
    assert_eq!(r.targets["worker"].args["GREETING"], "hi");
    assert_eq!(r.targets["worker"].args["N"], "3");
    assert_eq!(r.targets["api"].dockerfile.as_deref(), Some("Dockerfile"));
    // base is built because the others name it, though not asked for.
    assert!(r.targets.contains_key("base"));
    assert!(!r.requested.contains(&"base".to_owned()));
    let order = r.build_order().unwrap();
    assert_eq!(order[0], "base");
}

#[test]
fn environment_overrides_a_variable_and_later_defaults_use_it() {
    let def = load(&[file("docker-bake.hcl", MONO)], &|v| match v {
        "TAG" => Some("1.2".into()),
        "REGISTRY" => Some("reg:5000/".into()),
        _ => None,
    })
    .unwrap();
    let r = def.resolve(&["api".into()], &[]).unwrap();
    assert_eq!(r.targets["api"].tags, ["reg:5000/mono/api:1.2"]);
}

#[test]
fn set_overrides_globs_and_appends() {
    let r = resolve(
        &[file("docker-bake.hcl", MONO)],
        &["default"],
        &[
            "*.args.GREETING=yo",
            "api.tags=api:x",
            "api.tags=api:y",
            "w*.tags+=worker:extra",
            "web.no-cache=true",
        ],
    )
    .unwrap();
    assert_eq!(r.targets["api"].args["GREETING"], "yo");
    assert_eq!(r.targets["worker"].args["GREETING"], "yo");
    assert_eq!(r.targets["api"].tags, ["api:x", "api:y"]);
    assert_eq!(
        r.targets["worker"].tags,
        ["mono/worker:DEV", "worker:extra"]
    );
    assert_eq!(r.targets["web"].no_cache, Some(true));
}

#[test]
fn matrix_expands_to_one_target_per_combination() {
    let hcl = r#"
target "app" {
  name = "app-${tgt}-${replace(v, ".", "-")}"
  matrix = { tgt = ["a", "b"], v = ["1.0", "2.0"] }
  args = { V = v }
  target = tgt
}
group "default" { targets = ["app"] }
"#;
    let r = resolve(&[file("docker-bake.hcl", hcl)], &[], &[]).unwrap();
    assert_eq!(
        r.requested,
        ["app-a-1-0", "app-a-2-0", "app-b-1-0", "app-b-2-0"]
    );
    assert_eq!(r.targets["app-b-2-0"].args["V"], "2.0");
    assert_eq!(r.targets["app-b-2-0"].target.as_deref(), Some("b"));
    // One expanded name works on its own too.
    let one = resolve(&[file("docker-bake.hcl", hcl)], &["app-a-2-0"], &[]).unwrap();
    assert_eq!(one.requested, ["app-a-2-0"]);
}

#[test]
fn matrix_without_name_or_with_bad_name_is_an_error() {
    let e = resolve(
        &[file(
            "b.hcl",
            "target \"x\" {\n matrix = { a = [\"1\"] }\n}\n",
        )],
        &["x"],
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("needs a name attribute"), "{e}");
    let e = resolve(
        &[file(
            "b.hcl",
            "target \"x\" {\n name = \"x.${a}\"\n matrix = { a = [\"1\"] }\n}\n",
        )],
        &["x"],
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("not a valid target name"), "{e}");
}

#[test]
fn json_file_reads_like_hcl_with_interpolation() {
    let json = r#"{
      "variable": { "TAG": { "default": "j" } },
      "group": { "default": { "targets": ["app"] } },
      "target": { "app": { "context": "app", "tags": ["app:${TAG}"], "args": { "A": "1" } } }
    }"#;
    let r = resolve(&[file("docker-bake.json", json)], &[], &[]).unwrap();
    assert_eq!(r.targets["app"].tags, ["app:j"]);
    assert_eq!(r.targets["app"].context.as_deref(), Some("app"));
}

#[test]
fn later_file_overrides_variables_and_target_fields() {
    let over = r#"
variable "TAG" { default = "override" }
target "api" { args = { EXTRA = "1" } }
"#;
    let r = resolve(
        &[
            file("docker-bake.hcl", MONO),
            file("docker-bake.override.hcl", over),
        ],
        &["api"],
        &[],
    )
    .unwrap();
    assert_eq!(r.targets["api"].tags, ["mono/api:override"]);
    assert_eq!(r.targets["api"].args["EXTRA"], "1");
    assert_eq!(r.targets["api"].args["GREETING"], "hello");
}

const COMPOSE: &str = r#"
x-common: &common
  args:
    GREETING: hello
services:
  api:
    image: mono/api:${TAG:-dev}
    build:
      context: api
      additional_contexts:
        base: target:base
      <<: *common
  worker:
    build:
      context: ./worker
      dockerfile: Dockerfile
      args:
        - GREETING=hi
      tags: ["mono/worker:dev"]
      secrets: [token]
  db:
    image: postgres
secrets:
  token:
    file: ./token.txt
"#;

#[test]
fn compose_services_become_targets_of_the_default_group() {
    let def = load(&[file("compose.yaml", COMPOSE)], &no_env).unwrap();
    assert_eq!(def.groups["default"], ["api", "worker"]);
    let api = &def.targets["api"];
    assert_eq!(api.tags, ["mono/api:dev"]);
    assert_eq!(api.context.as_deref(), Some("api"));
    assert_eq!(api.contexts["base"], "target:base");
    assert_eq!(api.args["GREETING"], "hello");
    let worker = &def.targets["worker"];
    assert_eq!(worker.args["GREETING"], "hi");
    assert_eq!(worker.secret, ["id=token,src=./token.txt"]);
}

#[test]
fn compose_paths_are_relative_to_the_compose_file() {
    let mut f = file("mono/compose.yaml", COMPOSE);
    f.dir = PathBuf::from("mono");
    let def = load(&[f], &|v| (v == "TAG").then(|| "7".to_owned())).unwrap();
    assert_eq!(def.targets["api"].context.as_deref(), Some("mono/api"));
    assert_eq!(def.targets["api"].tags, ["mono/api:7"]);
    assert_eq!(
        def.targets["worker"].secret,
        ["id=token,src=mono/./token.txt"]
    );
}

#[test]
fn compose_x_bake_fields_lie_over_the_build_section() {
    let y = "services:\n  a:\n    image: a:1\n    build:\n      context: .\n      x-other: 1\n      x-bake:\n        output: [\"type=oci,dest=a.tar\"]\n        no-cache: true\n        tags: [\"a:2\"]\n";
    let def = load(&[file("compose.yaml", y)], &no_env).unwrap();
    let a = &def.targets["a"];
    assert_eq!(a.output, ["type=oci,dest=a.tar"]);
    assert_eq!(a.no_cache, Some(true));
    assert_eq!(a.tags, ["a:1", "a:2"]);
}

#[test]
fn compose_interpolation() {
    let env = |v: &str| match v {
        "A" => Some("a".to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    let i = |s: &str| compose::interpolate(s, &env).unwrap();
    assert_eq!(i("x${A}y$A"), "xaya");
    assert_eq!(i("${EMPTY:-d}|${EMPTY-d}|${NONE-d}"), "d||d");
    assert_eq!(i("$$A"), "$A");
    assert!(compose::interpolate("${A", &env).is_err());
}

#[test]
fn compose_unknown_build_key_names_the_service_and_key() {
    let y = "services:\n  a:\n    build:\n      context: .\n      frobnicate: 1\n";
    let e = load(&[file("compose.yaml", y)], &no_env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("service \"a\" build.frobnicate"), "{e}");
}

#[test]
fn errors_name_the_file_and_place() {
    let e = load(
        &[file("docker-bake.hcl", "target \"a\" {\n  tags = [\n")],
        &no_env,
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("docker-bake.hcl: "), "{e}");
    let e = load(
        &[file(
            "docker-bake.hcl",
            "target \"a\" {\n  tags = [nope]\n}\n",
        )],
        &no_env,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("docker-bake.hcl:2: target \"a\" attribute tags: "),
        "{e}"
    );
    let e = load(
        &[file(
            "docker-bake.hcl",
            "target \"a\" {\n  colour = \"red\"\n}\n",
        )],
        &no_env,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown field `colour`"), "{e}");
    assert!(e.starts_with("docker-bake.hcl:1: target \"a\""), "{e}");
    let e = load(
        &[file(
            "docker-bake.hcl",
            "variable \"A\" {\n  default = 1\n}\nvariable \"B\" {\n  default = nope\n}\n",
        )],
        &no_env,
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("docker-bake.hcl:5: variable \"B\": "), "{e}");
    let e = load(&[file("compose.yaml", "services: [\n")], &no_env)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("compose.yaml: "), "{e}");
}

#[test]
fn unknown_names_and_cycles_are_errors() {
    let e = resolve(&[file("docker-bake.hcl", MONO)], &["nope"], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no target or group named \"nope\""), "{e}");
    let cyc = "target \"a\" {\n inherits = [\"b\"]\n}\ntarget \"b\" {\n inherits = [\"a\"]\n}\n";
    let e = resolve(&[file("b.hcl", cyc)], &["a"], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("inherits cycle: a -> b -> a"), "{e}");
    let ctx = "target \"a\" {\n contexts = { x = \"target:b\" }\n}\ntarget \"b\" {\n contexts = { y = \"target:a\" }\n}\n";
    let e = resolve(&[file("b.hcl", ctx)], &["a"], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("contexts cycle"), "{e}");
}

#[test]
fn functions_behave_as_go_cty() {
    let hcl = r##"
target "f" {
  args = {
    a = trimprefix("v1.2", "v")
    b = substr("abcdef", 1, 3)
    c = sanitize("feature/x.y")
    d = format("%s-%d", "x", 5)
    e = length(split(",", "a,b,c"))
    f = coalesce("", "z")
    g = regex_replace("a1b22", "[0-9]+", "#")
    h = notequal("a", "b")
    i = add(2, 3)
    j = join(",", distinct(concat(["a"], ["a", "b"])))
    k = contains(["x"], "x") ? "yes" : "no"
  }
}
"##;
    let r = resolve(&[file("b.hcl", hcl)], &["f"], &[]).unwrap();
    let a = &r.targets["f"].args;
    let got: Vec<&str> = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"]
        .iter()
        .map(|k| a[*k].as_str())
        .collect();
    assert_eq!(
        got,
        [
            "1.2",
            "bcd",
            "feature_x_y",
            "x-5",
            "3",
            "z",
            "a#b#",
            "true",
            "5",
            "a,b",
            "yes"
        ]
    );
}

#[test]
fn print_json_sorts_keys_and_fills_defaults() {
    let r = resolve(&[file("docker-bake.hcl", MONO)], &["api"], &[]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["group"]["default"]["targets"], serde_json::json!(["api"]));
    assert_eq!(v["target"]["api"]["context"], "api");
    assert_eq!(v["target"]["base"]["dockerfile"], "Dockerfile");
    assert!(v["target"]["api"].get("inherits").is_none());
    let text = r.to_json();
    assert!(text.find("\"args\"").unwrap() < text.find("\"context\"").unwrap());
}

#[test]
fn build_argv_gives_run_flags_to_targets_asked_for_and_writes_inline_dockerfiles() {
    let hcl = r#"
target "base" {
  dockerfile-inline = "FROM scratch\n"
}
target "app" {
  context = "app"
  contexts = { base = "target:base" }
  tags = ["app:1"]
}
"#;
    let r = resolve(&[file("b.hcl", hcl)], &["app"], &[]).unwrap();
    let dir = std::env::temp_dir().join(format!("bake-argv-{}", std::process::id()));
    fs_err::create_dir_all(&dir).unwrap();
    let run = RunOptions {
        push: true,
        jobs: Some(3),
        ..RunOptions::default()
    };
    let (app, _) = r.build_argv("app", &run, &dir).unwrap();
    assert_eq!(
        app,
        [
            "rbuild",
            "build",
            "--jobs=3",
            "--push",
            "-f",
            "app/Dockerfile",
            "-t",
            "app:1",
            "app"
        ]
    );
    let (base, _) = r.build_argv("base", &run, &dir).unwrap();
    let inline = dir.join("base.Dockerfile");
    assert_eq!(
        base,
        [
            "rbuild",
            "build",
            "--jobs=3",
            "-f",
            &inline.display().to_string(),
            "."
        ]
    );
    assert_eq!(fs_err::read_to_string(&inline).unwrap(), "FROM scratch\n");
    fs_err::remove_dir_all(&dir).unwrap();
}
