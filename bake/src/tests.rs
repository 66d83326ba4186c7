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

/// buildx (`Target.GetName`, TestHCLMatrixWithGlobalTarget): a matrix target without `name` is named
/// like its block, so one combination is fine and two are a duplicate name; `name` needs a matrix.
#[test]
fn matrix_without_name_or_with_bad_name_is_an_error() {
    let one = resolve(
        &[file(
            "b.hcl",
            "target \"x\" {\n matrix = { a = [\"1\"] }\n args = { A = a }\n}\n",
        )],
        &["x"],
        &[],
    )
    .unwrap();
    assert_eq!(one.targets["x"].args["A"], "1");
    let e = resolve(
        &[file(
            "b.hcl",
            "target \"x\" {\n matrix = { a = [\"1\", \"2\"] }\n}\n",
        )],
        &["x"],
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("duplicate name \"x\""), "{e}");
    assert!(e.starts_with("b.hcl:2: "), "{e}");
    let e = resolve(
        &[file("b.hcl", "target \"x\" {\n name = \"y\"\n}\n")],
        &["x"],
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("name requires matrix"), "{e}");
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

// ---- HCL evaluation as buildx's hclparser (docker/buildx bake/hcl_test.go, bake/bake_test.go,
// ---- bake/hclparser/stdlib_test.go and docs/bake-stdlib.md at 461836b) ----

fn hcl_env(text: &str, env: &[(&str, &str)]) -> Result<Definition, Error> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    load(&[file("docker-bake.hcl", text)], &move |k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
}

fn hcl(text: &str) -> Result<Definition, Error> {
    hcl_env(text, &[])
}

/// The value of expression `expr` as cty's JSON (strings quoted), through a global attribute.
fn ev(expr: &str) -> Result<String, String> {
    let text = format!("x = {expr}\ntarget \"t\" {{\n  args = {{ v = jsonencode(x) }}\n}}\n");
    hcl(&text)
        .map(|d| d.targets["t"].args["v"].clone())
        .map_err(|e| e.to_string())
}

/// TestHCLWithUserDefinedFunctions, TestHCLWithVariablesInFunctions, TestHCLFunctionInAttr,
/// TestJSONFunctions (buildx bake/hcl_test.go).
#[test]
fn user_functions_see_their_params_and_top_level_names_and_call_each_other() {
    let text = r#"
variable "REPO" { default = "user/repo" }
function "increment" {
  params = [number]
  result = number + 1
}
function "tag" {
  params = [tag]
  result = ["${REPO}:${tag}"]
}
function "brace" {
  params = [inp]
  result = "[${inp}]"
}
function "myupper" {
  params = [val]
  result = "${upper(val)} <> ${brace(v2)}"
}
function "tags" {
  params = [name]
  variadic_params = versions
  result = [for v in versions : "${REPO}/${name}:${v}"]
}
v1 = myupper("foo")
v2 = lower("BAZ")
target "webapp" {
  args = {
    buildno = "${increment(123)}"
    v1 = v1
  }
  tags = concat(tag("v1"), tags("web", "1", "2"))
}
"#;
    let d = hcl(text).unwrap();
    let t = &d.targets["webapp"];
    assert_eq!(t.args["buildno"], "124");
    assert_eq!(t.args["v1"], "FOO <> [baz]");
    assert_eq!(
        t.tags,
        ["user/repo:v1", "user/repo/web:1", "user/repo/web:2"]
    );
    let d = hcl_env(text, &[("REPO", "docker/buildx")]).unwrap();
    assert_eq!(d.targets["webapp"].tags[0], "docker/buildx:v1");

    let json = r#"{
      "FOO": "abc",
      "function": { "myfunc": { "params": ["inp"], "result": "<${upper(inp)}-${FOO}>" } },
      "target": { "app": { "args": { "v1": "pre-${myfunc(\"foo\")}", "v2": "myfunc(\"foo\")" } } }
    }"#;
    let d = load(&[file("docker-bake.json", json)], &no_env).unwrap();
    assert_eq!(d.targets["app"].args["v1"], "pre-<FOO-abc>");
    // TestJSONInvalidFunctions: a JSON string without ${} is text, not a call.
    assert_eq!(d.targets["app"].args["v2"], "myfunc(\"foo\")");
}

/// TestFunctionNoParams, TestFunctionNoResult; a function that reaches itself is refused before
/// anything runs (buildx: "function cycle not allowed"), naming the file and line; wrong argument counts.
#[test]
fn user_function_errors_name_the_function_and_line() {
    let e = hcl(
        "function \"foo\" {\n  result = \"bar\"\n}\ntarget \"t\" {\n  args = { a = foo() }\n}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("empty params not allowed for foo"), "{e}");
    assert!(e.starts_with("docker-bake.hcl:1: function \"foo\""), "{e}");
    let e = hcl("function \"foo\" {\n  params = [a]\n}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty result not allowed for foo"), "{e}");
    let cyc = r#"
function "a" {
  params = [x]
  result = x > 0 ? b(x - 1) : 0
}
function "b" {
  params = [x]
  result = a(x)
}
target "t" {}
"#;
    let e = hcl(cyc).unwrap_err().to_string();
    assert!(
        e.contains("function cycle not allowed for a (a -> b -> a)"),
        "{e}"
    );
    assert!(e.starts_with("docker-bake.hcl:4: function \"a\""), "{e}");
    let e = hcl("function \"f\" {\n  params = [a, b]\n  result = a\n}\ntarget \"t\" {\n  args = { x = f(1) }\n}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not enough function arguments"), "{e}");
    assert!(
        e.starts_with("docker-bake.hcl:6: target \"t\" attribute args"),
        "{e}"
    );
    let e = hcl("function \"f\" {\n  params = [\"a\"]\n  result = 1\n}\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Each parameter name must be an identifier"),
        "{e}"
    );
    // A built-in keeps its name: a user function cannot replace it (buildx resolves built-ins first).
    let d = hcl("function \"upper\" {\n  params = [s]\n  result = \"no\"\n}\ntarget \"t\" {\n  args = { x = upper(\"a\") }\n}\n").unwrap();
    assert_eq!(d.targets["t"].args["x"], "A");
}

/// TestHCLTargetAttrs, TestHCLTargetGlobal, TestHCLTargetAttrName, TestHCLTargetAttrEmptyChain,
/// TestHCLRenameTargetAttrs, TestHCLMatrixWithGlobalTarget (buildx bake/hcl_test.go).
#[test]
fn target_references_resolve_only_the_attribute_they_name() {
    let d = hcl(r#"
target "foo" {
  dockerfile = "xxx"
  context = target.bar.context
  target = target.foo.dockerfile
}
target "bar" {
  dockerfile = target.foo.dockerfile
  context = "yyy"
  target = target.bar.context
}
"#)
    .unwrap();
    let (foo, bar) = (&d.targets["foo"], &d.targets["bar"]);
    assert_eq!(foo.dockerfile.as_deref(), Some("xxx"));
    assert_eq!(foo.context.as_deref(), Some("yyy"));
    assert_eq!(foo.target.as_deref(), Some("xxx"));
    assert_eq!(bar.dockerfile.as_deref(), Some("xxx"));
    assert_eq!(bar.target.as_deref(), Some("yyy"));

    let d = hcl(r#"
target "foo" {
  dockerfile = "x"
}
x = target.foo.dockerfile
y = x
target "bar" {
  dockerfile = y
  target = target.bar.name
  context = target.bar.network
}
"#)
    .unwrap();
    assert_eq!(d.targets["bar"].dockerfile.as_deref(), Some("x"));
    assert_eq!(d.targets["bar"].target.as_deref(), Some("bar"));
    assert_eq!(d.targets["bar"].context, None);

    // A matrix target is referred to by its expanded name, not its block label.
    let d = hcl(r#"
target "def" {
  dockerfile = target.xyz.dockerfile
}
target "abc" {
  name = "xyz"
  matrix = {}
  dockerfile = "foo"
}
"#)
    .unwrap();
    assert_eq!(d.targets["def"].dockerfile.as_deref(), Some("foo"));
    let e = hcl("target \"abc\" {\n  name = \"xyz\"\n  matrix = {}\n  dockerfile = \"foo\"\n}\ntarget \"def\" {\n  dockerfile = target.abc.dockerfile\n}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown target \"abc\""), "{e}");
    assert!(e.starts_with("docker-bake.hcl:7: "), "{e}");

    let d = hcl(r#"
target "x" {
  tags = ["a", "b"]
  args = { A = 1, B = "b" }
  platforms = ["linux/amd64"]
}
target "default" {
  tags = target.x.tags
  matrix = { dummy = [""] }
}
target "app" {
  inherits = ["x"]
  args = merge(target.x.args, { C = "${target.x.tags[1]}-c" })
  tags = [for t in target.x.tags : "app-${t}"]
  labels = { first = "${target.x.platforms[0]}" }
}
"#)
    .unwrap();
    assert_eq!(d.targets["default"].tags, ["a", "b"]);
    let r = d.resolve(&["app".into()], &[]).unwrap();
    let app = &r.targets["app"];
    assert_eq!(app.args["A"], "1");
    assert_eq!(app.args["C"], "b-c");
    assert_eq!(app.tags, ["app-a", "app-b"]);
    assert_eq!(app.labels["first"], "linux/amd64");
    assert_eq!(app.platforms, ["linux/amd64"]);
}

/// A reference that comes back to itself is an error naming the file, line and attribute
/// (buildx: "reference cycle not allowed for target.a.tags").
#[test]
fn target_reference_cycles_name_the_file_and_line() {
    let text = "target \"a\" {\n  tags = target.b.tags\n}\ntarget \"b\" {\n  context = \".\"\n  tags = target.a.tags\n}\n";
    let e = hcl(text).unwrap_err().to_string();
    assert!(
        e.contains("reference cycle not allowed for target.a.tags"),
        "{e}"
    );
    assert!(
        e.starts_with("docker-bake.hcl:2: target \"a\" attribute tags"),
        "{e}"
    );
    assert!(
        e.contains("docker-bake.hcl:6: target \"b\" attribute tags"),
        "{e}"
    );
    let e = hcl("target \"a\" {\n  tags = target\n}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot access target as a variable"), "{e}");
}

/// TestHCLAttrs, TestJSONAttributes, TestHCLVariableCycle (buildx bake/hcl_test.go): top-level
/// attributes are values the environment does not change; variables may not need themselves.
#[test]
fn global_attributes_and_variable_cycles() {
    let text = "FOO=\"abc\"\nBAR=\"attr-${FOO}def\"\ntarget \"app\" {\n  args = { v1 = BAR }\n}\n";
    let d = hcl_env(text, &[("FOO", "bar")]).unwrap();
    assert_eq!(d.targets["app"].args["v1"], "attr-abcdef");
    let json = r#"{"FOO": "abc", "variable": {"BAR": {"default": "def"}}, "target": { "app": { "args": {"v1": "pre-${FOO}-${BAR}"}} } }"#;
    let d = load(&[file("docker-bake.json", json)], &no_env).unwrap();
    assert_eq!(d.targets["app"].args["v1"], "pre-abc-def");
    let e = hcl("variable \"FOO\" {\n  default = BAR\n}\nvariable \"FOO2\" {\n  default = FOO\n}\nvariable \"BAR\" {\n  default = FOO\n}\ntarget \"app\" {}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("variable cycle not allowed for FOO"), "{e}");
}

/// docs/bake-stdlib.md's examples (where they agree with go-cty's code) and stdlib_test.go's cases.
#[test]
fn builtin_functions_give_go_cty_results() {
    let cases: &[(&str, &str)] = &[
        ("absolute(-42)", "42"),
        ("base64decode(\"SGVsbG8=\")", "\"Hello\""),
        ("base64encode(\"Hello\")", "\"SGVsbG8=\""),
        ("basename(\"/usr/local/bin/docker\")", "\"docker\""),
        ("basename(\"\")", "\".\""),
        ("basename(\"/\")", "\"/\""),
        ("can(parseint(\"123\", 10))", "true"),
        ("can(parseint(\"zz\", 10))", "false"),
        ("ceil(3.14)", "4"),
        ("chomp(\"Hello\\n\\n\")", "\"Hello\""),
        ("chunklist([1,2,3,4,5], 2)", "[[1,2],[3,4],[5]]"),
        ("coalesce(null, \"\", \"docker\")", "\"docker\""),
        ("coalescelist([], [1,2], [3])", "[1,2]"),
        ("compact([\"a\", \"\", \"b\", \"\"])", "[\"a\",\"b\"]"),
        ("concat([1,2],[3,4])", "[1,2,3,4]"),
        ("contains([1,2,3], 2)", "true"),
        ("csvdecode(\"name,age\\nAlice,30\\nBob,40\")", "[{\"age\":\"30\",\"name\":\"Alice\"},{\"age\":\"40\",\"name\":\"Bob\"}]"),
        ("dirname(\"/usr/local/bin/docker\")", "\"/usr/local/bin\""),
        ("dirname(\"docker\")", "\".\""),
        ("distinct([1,2,2,3,3,3])", "[1,2,3]"),
        ("divide(10, 4)", "2.5"),
        ("element([\"a\",\"b\",\"c\"], 4)", "\"b\""),
        ("equal(2, 2)", "true"),
        ("flatten([[1,2],[3,[4]],[5]])", "[1,2,3,4,5]"),
        ("floor(3.99)", "3"),
        ("format(\"Hello, %s! %05.1f %-3d| %q %t %x\", \"World\", 3.14159, 7, \"q\", true, 255)", "\"Hello, World! 003.1 7  | \\\"q\\\" true ff\""),
        ("formatdate(\"YYYY-MM-DD\", \"2025-09-16T12:00:00Z\")", "\"2025-09-16\""),
        ("formatdate(\"EEEE, DD-MMM-YY hh:mm:ss ZZZZZ 'at' H AA\", \"2018-01-04T23:12:01-08:00\")", "\"Thursday, 04-Jan-18 23:12:01 -08:00 at 11 PM\""),
        ("formattimestamp(\"X\", \"2015-10-21T00:00:00Z\")", "\"1445385600\""),
        ("formattimestamp(\"YYYY-MM-DD'T'hh:mm:ssZ\", 1445385600)", "\"2015-10-21T00:00:00Z\""),
        ("formatlist(\"Hi %s\", [\"Alice\", \"Bob\"])", "[\"Hi Alice\",\"Hi Bob\"]"),
        ("greaterthan(5, 2)", "true"),
        ("greaterthanorequalto(5, 5)", "true"),
        ("hasindex([10, 20, 30], 1)", "true"),
        ("hasindex([10, 20, 30], 5)", "false"),
        ("indent(4, \"Hello\\nWorld\")", "\"Hello\\n    World\""),
        ("index({foo = \"bar\", baz = \"qux\"}, \"baz\")", "\"qux\""),
        ("indexof([\"a\",\"b\",\"c\"], \"b\")", "1"),
        ("int(3.75)", "3"),
        ("join(\",\", [\"a\",\"b\"], [\"c\"])", "\"a,b,c\""),
        ("jsondecode(\"{\\\"name\\\":\\\"Docker\\\",\\\"stars\\\":5}\").stars", "5"),
        ("jsonencode({name=\"<Docker>\", stars=5})", "\"{\\\"name\\\":\\\"\\\\u003cDocker\\\\u003e\\\",\\\"stars\\\":5}\""),
        ("keys({foo=1, bar=2, baz=3})", "[\"bar\",\"baz\",\"foo\"]"),
        ("length([1,2,3,4])", "4"),
        ("length(\"héllo\")", "5"),
        ("lessthan(10, 3)", "false"),
        ("lessthanorequalto(5, 7)", "true"),
        ("log(100, 10)", "2"),
        ("lookup({a=\"apple\", b=\"banana\"}, \"c\", \"none\")", "\"none\""),
        ("max(3, 9, 7)", "9"),
        ("md5(\"docker\")", "\"05b6053c41a2130afd6fc3b158bda4e6\""), // coreutils md5sum
        ("merge({a=1, b=2}, {b=3, c=4})", "{\"a\":1,\"b\":3,\"c\":4}"),
        ("min(3, 9, 7)", "3"),
        ("modulo(10, 3)", "1"),
        ("multiply(6, 7)", "42"),
        ("negate(7)", "-7"),
        ("notequal(4, 5)", "true"),
        ("parseint(\"ff\", 16)", "255"),
        ("parseint(\"-101\", 2)", "-5"),
        ("pow(3, 2)", "9"),
        ("range(0, 5)", "[0,1,2,3,4]"),
        ("range(3)", "[0,1,2]"),
        ("range(5, 0, -2)", "[5,3,1]"),
        ("regex(\"h.llo\", \"hello\")", "\"hello\""),
        ("regex(\"(\\\\d+)-(\\\\d+)\", \"v10-20\")", "[\"10\",\"20\"]"),
        ("regex(\"(?P<major>\\\\d+)\\\\.(?P<minor>\\\\d+)\", \"1.22\")", "{\"major\":\"1\",\"minor\":\"22\"}"),
        ("regex_replace(\"abc123xyz\", \"[0-9]+\", \"NUM\")", "\"abcNUMxyz\""),
        ("regexall(\"[a-z]+\", \"abc123xyz\")", "[\"abc\",\"xyz\"]"),
        ("replace(\"banana\", \"na\", \"--\")", "\"ba----\""),
        ("reverse(\"stressed\")", "\"desserts\""),
        ("reverselist([1,2,3])", "[3,2,1]"),
        ("sanitize(\"My App! v1.0\")", "\"My_App__v1_0\""),
        ("sanitize(\"a-b_c\")", "\"a-b_c\""),
        ("sethaselement([1,2,3], 2)", "true"),
        ("setintersection([\"a\",\"b\",\"c\"], [\"b\",\"c\",\"d\"])", "[\"b\",\"c\"]"),
        ("setproduct([\"x\",\"y\"], [1,2])", "[[\"x\",1],[\"x\",2],[\"y\",1],[\"y\",2]]"),
        ("setsubtract([1,2,3], [2])", "[1,3]"),
        ("setsymmetricdifference([1,2,3], [3,4])", "[1,2,4]"),
        ("setunion([\"b\",\"a\"], [\"b\",\"c\"])", "[\"a\",\"b\",\"c\"]"),
        ("sha1(\"hello\")", "\"aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d\""),
        ("sha256(\"hello\")", "\"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\""),
        ("substr(sha512(\"hello\"), 0, 8)", "\"9b71d224\""),
        ("[signum(0), signum(12), signum(-12)]", "[0,1,-1]"),
        ("slice([\"a\",\"b\",\"c\",\"d\"], 1, 3)", "[\"b\",\"c\"]"),
        ("sort([\"b\",\"c\",\"a\"])", "[\"a\",\"b\",\"c\"]"),
        ("split(\",\", \"a,b,c\")", "[\"a\",\"b\",\"c\"]"),
        ("strlen(\"Docker\")", "6"),
        ("substr(\"abcdef\", 2, 3)", "\"cde\""),
        ("substr(\"abcdef\", -2, -1)", "\"ef\""),
        ("subtract(10, 3)", "7"),
        ("timeadd(\"2025-09-24T12:00:00Z\", \"1h30m\")", "\"2025-09-24T13:30:00Z\""),
        ("timeadd(\"2024-03-01T00:00:00Z\", \"-24h\")", "\"2024-02-29T00:00:00Z\""),
        ("title(\"hello world\")", "\"Hello World\""),
        ("trim(\"--hello--\", \"-\")", "\"hello\""),
        ("trimprefix(\"docker-build\", \"docker-\")", "\"build\""),
        ("trimspace(\"   hello   \")", "\"hello\""),
        ("trimsuffix(\"filename.txt\", \".txt\")", "\"filename\""),
        ("try(parseint(\"zz\", 16), parseint(\"ff\", 16))", "255"),
        ("try(index({a=\"apple\"}, \"b\"), \"fallback\")", "\"fallback\""),
        ("try(nope.x, \"unknown names too\")", "\"unknown names too\""),
        ("unixtimestampparse(1445385600).rfc3339", "\"2015-10-21T00:00:00Z\""),
        ("[for k in [\"year\", \"month_name\", \"weekday_name\", \"year_day\", \"iso_week\"] : unixtimestampparse(1735689600)[k]]", "[2025,\"January\",\"Wednesday\",1,1]"),
        ("upper(\"hello\")", "\"HELLO\""),
        ("urlencode(\"a b=c&d\")", "\"a+b%3Dc%26d\""),
        ("values({a=1, c=3, b=2})", "[1,2,3]"),
        // docs/bake-stdlib.md and Terraform's cidr docs (the same go-cidr code).
        ("cidrhost(\"10.0.0.0/16\", 5)", "\"10.0.0.5\""),
        ("cidrhost(\"10.12.112.0/20\", -1)", "\"10.12.127.255\""),
        ("cidrhost(\"fd00:fd12:3456:7890::/56\", 16)", "\"fd00:fd12:3456:7800::10\""),
        ("cidrnetmask(\"10.0.0.0/16\")", "\"255.255.0.0\""),
        ("cidrsubnet(\"10.0.0.0/16\", 4, 2)", "\"10.0.32.0/20\""),
        ("cidrsubnet(\"fd00:fd12:3456:7890::/56\", 16, 162)", "\"fd00:fd12:3456:7800:a200::/72\""),
        ("cidrsubnets(\"10.1.0.0/16\", 4, 4, 8, 4)", "[\"10.1.0.0/20\",\"10.1.16.0/20\",\"10.1.32.0/24\",\"10.1.48.0/20\"]"),
        // convert's second argument is a type (typeexpr).
        ("convert(\"42\", number)", "42"),
        ("convert([\"b\", \"a\", \"b\"], set(string))", "[\"a\",\"b\"]"),
        // Python's uuid.uuid5(NAMESPACE_DNS, "example.com") and (NAMESPACE_URL, "https://www.docker.com").
        ("uuidv5(\"dns\", \"example.com\")", "\"cfbff0d1-9375-5685-968c-48ce8b15ae17\""),
        ("uuidv5(\"6ba7b811-9dad-11d1-80b4-00c04fd430c8\", \"https://www.docker.com\")", "\"94e785f0-5ed7-5050-9e40-0626672661ff\""),
        ("regex(\"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$\", uuidv4()) != uuidv4()", "true"),
        // stdlib_test.go TestSemverCmp, and Masterminds' ranges.
        ("semvercmp(\"1.2.3\", \">= 1.0.0\")", "true"),
        ("semvercmp(\"2.1.0\", \"< 2.0.0\")", "false"),
        ("semvercmp(\"3.22\", \">= 3.20\")", "true"),
        ("[for c in [\"~1.2\", \"^1.0\", \"^0.2\", \"1.2.x\", \">1.2, <1.3\", \"<1 || >=1.2.4\", \"1.0 - 1.2.3\", \"!=1.2.4\"] : semvercmp(\"v1.2.4\", c)]", "[true,true,false,true,false,true,false,false]"),
        ("semvercmp(\"1.3.0-beta.1\", \">=1.2\")", "false"),
        ("zipmap([\"name\",\"stars\"], [\"Docker\", 5])", "{\"name\":\"Docker\",\"stars\":5}"),
        // Operators and conversions as cty: numeric strings in arithmetic, short-circuit logic.
        ("\"2\" + 3", "5"),
        ("10 / 4", "2.5"),
        ("false && nope", "false"),
        ("{ for k, v in {b = 2, a = 1} : v => k }", "{\"1\":\"a\",\"2\":\"b\"}"),
        ("[for i, v in [\"a\", \"b\", \"a\"] : \"${i}${v}\" if v == \"a\"]", "[\"0a\",\"2a\"]"),
        ("{ for v in [\"a\", \"b\", \"a\"] : v => v... }", "{\"a\":[\"a\",\"a\"],\"b\":[\"b\"]}"),
        ("\"%{ for v in [1, 2] }<${v}>%{ endfor ~}\"", "\"\\u003c1\\u003e\\u003c2\\u003e\""),
        ("[{ a = 1 }, { a = 2 }][*].a", "[1,2]"),
    ];
    let mut wrong = Vec::new();
    for (expr, want) in cases {
        match ev(expr) {
            Ok(got) if got == *want => {}
            other => wrong.push(format!("{expr}: want {want}, got {other:?}")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // timestamp() is the current time (buildx: time.Now, whatever SOURCE_DATE_EPOCH says).
    let now = ev("timestamp()").unwrap();
    assert!(
        now.starts_with("\"20") && now.ends_with("Z\"") && now.len() == 22,
        "{now}"
    );
    for (expr, msg) in [
        ("indexof([\"a\"], \"z\")", "item not found"),
        ("range(0, 2000)", "more than 1024 values"),
        ("try(nope, also_nope)", "no expression succeeded"),
        ("nosuchfunc(1)", "there is no function named \"nosuchfunc\""),
        ("bcrypt(\"x\")", "there is no function named \"bcrypt\""),
        (
            "cidrsubnet(\"10.0.0.0/16\", 4, 16)",
            "does not accommodate a subnet numbered 16",
        ),
        (
            "semvercmp(\"not-a-version\", \">= 1.0.0\")",
            "invalid semantic version",
        ),
        (
            "semvercmp(\"1.2.3\", \"not-a-constraint\")",
            "improper constraint",
        ),
        ("semvercmp(\"1.2.3\", \"\")", "improper constraint"),
        ("semvercmp(\"\", \">= 1.0.0\")", "invalid semantic version"),
        ("upper(\"a\", \"b\")", "takes 1 argument(s), got 2"),
    ] {
        let e = ev(expr).unwrap_err();
        assert!(e.contains(msg), "{expr}: {e}");
        assert!(e.contains("docker-bake.hcl:1: attribute \"x\": "), "{e}");
    }
}

/// The functions list covers buildx's stdlib.go but for the ones named as missing.
#[test]
fn builtin_function_names_match_buildx_list_but_for_the_missing_ones() {
    // buildx bake/hclparser/stdlib.go at 461836b: 106 functions.
    assert_eq!(funcs::NAMES.len() + funcs::MISSING.len(), 106);
    for name in funcs::NAMES {
        assert!(!funcs::MISSING.contains(name), "{name}");
        if !matches!(*name, "try" | "can" | "convert") {
            assert!(funcs::call(name, &[]).is_some(), "{name} is not callable");
        }
    }
}

/// TestHCLTypedVariables, TestVarTypingSpec, TestDefaultVarTypeEnforcement, TestTypedVarOverrides(_JSON),
/// TestVarUnsupportedType, TestHCLTypedValuelessVariables (buildx bake/hcl_test.go).
#[test]
fn typed_variables_convert_defaults_and_environment_as_buildx() {
    let text = r#"
variable "FLAG" {
  type = bool
  default = false
}
variable "NUM" {
  type = number
  default = "3"
}
variable "LIST" {
  type = list(string)
  default = ["a"]
}
variable "SET" {
  type = set(number)
  default = [2, 1, 2]
}
variable "MAP" {
  type = map(string)
  default = { a = "1" }
}
variable "OBJ" {
  type = object({ name = string, n = number })
  default = { name = "x", n = "2", extra = true }
}
variable "NONE" {
  type = string
}
variable "UNTYPED" {
  default = 1
}
target "t" {
  args = {
    flag = FLAG ? "on" : "off"
    num = NUM + 1
    list = join(",", LIST)
    set = jsonencode(SET)
    map = jsonencode(MAP)
    obj = jsonencode(OBJ)
    none = NONE == null ? "null" : NONE
    untyped = UNTYPED + 1
  }
}
"#;
    let a = hcl(text).unwrap().targets["t"].args.clone();
    assert_eq!(a["flag"], "off");
    assert_eq!(a["num"], "4");
    assert_eq!(a["list"], "a");
    assert_eq!(a["set"], "[1,2]");
    assert_eq!(a["map"], "{\"a\":\"1\"}");
    assert_eq!(a["obj"], "{\"n\":2,\"name\":\"x\"}");
    assert_eq!(a["none"], "null");
    assert_eq!(a["untyped"], "2");
    let a = hcl_env(
        text,
        &[
            ("FLAG", "true"),
            ("NUM", "1.5"),
            ("LIST", "x,\"y,z\""),
            ("SET", "3,1,3"),
            ("MAP", "k1:v1,k2:v2"),
            ("OBJ_JSON", "{\"name\":\"j\",\"n\":7}"),
            ("NONE", "set"),
            ("UNTYPED", "41"),
        ],
    )
    .unwrap()
    .targets["t"]
        .args
        .clone();
    assert_eq!(a["flag"], "on");
    assert_eq!(a["num"], "2.5");
    assert_eq!(a["list"], "x,y,z");
    assert_eq!(a["set"], "[1,3]");
    assert_eq!(a["map"], "{\"k1\":\"v1\",\"k2\":\"v2\"}");
    assert_eq!(a["obj"], "{\"n\":7,\"name\":\"j\"}");
    assert_eq!(a["none"], "set");
    assert_eq!(a["untyped"], "42");
    // A typed list can also come as JSON, which wins over the plain value (TestJSONOverridePriority).
    let a = hcl_env(text, &[("LIST", "p"), ("LIST_JSON", "[\"j1\",\"j2\"]")]).unwrap();
    assert_eq!(a.targets["t"].args["list"], "j1,j2");

    for (env, msg) in [
        (("FLAG", "maybe"), "failed to parse FLAG as bool"),
        (("NUM", "many"), "failed to parse NUM as number"),
        (("OBJ", "a,b"), "unsupported type object for variable OBJ"),
        (("UNTYPED", "x"), "failed to parse UNTYPED as number"),
    ] {
        let e = hcl_env(text, &[env]).unwrap_err().to_string();
        assert!(e.contains(msg), "{env:?}: {e}");
    }
    let e = hcl_env(
        "variable \"FOO\" {\n  default = []\n}\ntarget \"default\" {}\n",
        &[("FOO", "bar")],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unsupported type tuple for variable FOO"), "{e}");
    let e = hcl("variable \"N\" {\n  type = number\n  default = \"abc\"\n}\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("invalid type number for variable N default value"),
        "{e}"
    );
    assert!(e.starts_with("docker-bake.hcl:3: variable \"N\""), "{e}");
    for t in [
        "bool",
        "number",
        "string",
        "any",
        "list(string)",
        "set(string)",
        "tuple([string, number])",
    ] {
        hcl(&format!(
            "variable \"FOO\" {{\n  type = {t}\n}}\ntarget \"default\" {{}}\n"
        ))
        .unwrap();
    }
    for t in ["boolean", "BOOL", "lower(\"bool\")"] {
        let e = hcl(&format!(
            "variable \"FOO\" {{\n  type = {t}\n}}\ntarget \"default\" {{}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a valid type"), "{t}: {e}");
    }
}

/// TestVariableValidation, ...Multi, ...WithDeps, ...Typed, ...ConditionNull,
/// ...ConditionUnknownValue, ...InvalidErrorMessage (buildx bake/bake_test.go).
#[test]
fn variable_validations_fail_with_their_message_and_line() {
    let text = r#"
variable "FOO" {
  validation {
    condition = FOO != ""
    error_message = "FOO is required."
  }
  validation {
    condition = strlen(FOO) > 4
    error_message = "FOO must be longer than 4 characters."
  }
}
variable "BAR" {
  validation {
    condition = FOO != "" || BAR == ""
    error_message = "BAR requires FOO to be set."
  }
}
target "app" {
  args = { FOO = FOO }
}
"#;
    hcl_env(text, &[("FOO", "barbar")]).unwrap();
    hcl_env(text, &[("FOO", "barbar"), ("BAR", "baz")]).unwrap();
    let e = hcl(text).unwrap_err().to_string();
    assert!(e.contains("Validation failed: FOO is required."), "{e}");
    assert!(
        e.starts_with("docker-bake.hcl:3: variable \"FOO\" validation"),
        "{e}"
    );
    let e = hcl_env(text, &[("FOO", "bar")]).unwrap_err().to_string();
    assert!(e.contains("FOO must be longer than 4 characters."), "{e}");
    assert!(e.starts_with("docker-bake.hcl:7: "), "{e}");
    let text2 = text.replace(
        "variable \"FOO\" {",
        "variable \"FOO\" {\n  default = \"longenough\"",
    );
    let e = hcl_env(&text2, &[("FOO", ""), ("BAR", "x")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("FOO is required."), "{e}");
    let typed = "variable \"FOO\" {\n  default = 0\n  validation {\n    condition = FOO > 5\n    error_message = \"FOO must be greater than 5.\"\n  }\n}\n";
    hcl_env(typed, &[("FOO", "10")]).unwrap();
    let e = hcl(typed).unwrap_err().to_string();
    assert!(e.contains("FOO must be greater than 5."), "{e}");
    let e = hcl("variable \"PORT\" {\n  default = 3000\n  validation {}\n}\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Condition expression must return either true or false, not null"),
        "{e}"
    );
    let e = hcl(
        "variable \"PORT\" {\n  default = 3000\n  validation {\n    condition = \"foo\"\n  }\n}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("Invalid condition result value: a bool is required"),
        "{e}"
    );
    let e =
        hcl("variable \"FOO\" {\n  default = 0\n  validation {\n    condition = FOO > 5\n  }\n}\n")
            .unwrap_err()
            .to_string();
    assert!(
        e.contains("This check failed, but has an invalid error message"),
        "{e}"
    );
}

/// buildx's Target (bake/bake.go): list options as strings or objects, `extra-hosts` as a map, and
/// `description`, `ulimits`, `entitlements`, `call`, `resources`, `policy` are accepted; the ones rbuild
/// builds with reach `rbuild build`, the others are reported as ignored.
#[test]
fn buildx_object_forms_and_newer_target_fields_are_accepted() {
    let text = r#"
target "app" {
  description = "the app"
  cache-from = [{ type = "registry", ref = "reg/app:cache" }, "type=local,src=c"]
  cache-to = { type = "inline" }
  output = [{ type = "oci", dest = "app.tar" }]
  secret = [{ id = "tok", env = "TOKEN" }]
  ssh = [{ id = "default" }]
  attest = [{ type = "sbom" }]
  extra-hosts = { db = "10.0.0.2" }
  ulimits = ["nofile=1024:2048"]
  entitlements = ["network.host"]
  call = "check"
  resources = { memory = "1g" }
}
"#;
    let r = resolve(&[file("docker-bake.hcl", text)], &["app"], &[]).unwrap();
    let t = &r.targets["app"];
    assert_eq!(
        t.cache_from,
        ["type=registry,ref=reg/app:cache", "type=local,src=c"]
    );
    assert_eq!(t.cache_to, ["type=inline"]);
    assert_eq!(t.output, ["type=oci,dest=app.tar"]);
    assert_eq!(t.secret, ["id=tok,env=TOKEN"]);
    assert_eq!(t.extra_hosts, ["db=10.0.0.2"]);
    assert_eq!(t.description.as_deref(), Some("the app"));
    let (argv, ignored) = r
        .build_argv("app", &RunOptions::default(), Path::new("/tmp"))
        .unwrap();
    for flag in [
        "--ulimit=nofile=1024:2048",
        "--allow=network.host",
        "--call=check",
        "--add-host=db=10.0.0.2",
    ] {
        assert!(argv.iter().any(|a| a == flag), "{flag}: {argv:?}");
    }
    assert!(
        argv.windows(2)
            .any(|w| w == ["--secret", "id=tok,env=TOKEN"]),
        "{argv:?}"
    );
    assert_eq!(ignored, ["resources"]);
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["target"]["app"]["description"], "the app");
}

/// TestHCLBuiltinVars (buildx bake/hcl_test.go) and commands/bake.go's defaults: built-in variables win
/// over the environment.
#[test]
fn builtin_variables_are_the_command_context_and_local_platform() {
    let text =
        "target \"app\" {\n  context = BAKE_CMD_CONTEXT\n  platforms = [BAKE_LOCAL_PLATFORM]\n}\n";
    let d = hcl_env(text, &[("BAKE_CMD_CONTEXT", "elsewhere")]).unwrap();
    assert_eq!(d.targets["app"].context.as_deref(), Some("."));
    let p = &d.targets["app"].platforms[0];
    assert!(p == "linux/amd64" || p == "linux/arm64", "{p}");
}

/// docs/BAKE.md names every built-in function rbuild has and every one of buildx's it lacks.
#[test]
fn bake_docs_list_every_function() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/BAKE.md");
    let doc = fs_err::read_to_string(path).unwrap();
    for name in funcs::NAMES.iter().chain(funcs::MISSING) {
        assert!(
            doc.contains(&format!("`{name}`")),
            "docs/BAKE.md lacks `{name}`"
        );
    }
}

/// HCL's JSON syntax for what HCL writes as expressions and blocks: a variable's `type` is a string
/// holding a type expression, its `validation` an object or a list of objects (TestCombineHCLAndJSONVars
/// and the JSON forms of buildx's docs/bake-reference.md).
#[test]
fn json_variables_take_types_and_validations() {
    let json = r#"{
      "variable": {
        "PLATFORMS": {
          "type": "list(string)",
          "default": ["linux/amd64"],
          "validation": [{ "condition": "${length(PLATFORMS) < 3}", "error_message": "at most two platforms" }]
        }
      },
      "target": { "app": { "platforms": "${PLATFORMS}" } }
    }"#;
    let env = |v: &str| (v == "PLATFORMS").then(|| "linux/amd64,linux/arm64".to_owned());
    let d = load(&[file("docker-bake.json", json)], &env).unwrap();
    assert_eq!(d.targets["app"].platforms, ["linux/amd64", "linux/arm64"]);
    let env = |v: &str| (v == "PLATFORMS").then(|| "a,b,c".to_owned());
    let e = load(&[file("docker-bake.json", json)], &env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Validation failed: at most two platforms"),
        "{e}"
    );
}
