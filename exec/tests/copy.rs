//! COPY rules as Docker documents them, run against temp dirs (no root, no container): the layer a COPY
//! writes is checked file by file.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use exec::Context;
use graph::{Copy, CopySource};
use oci::MergedView;

/// A build context with `files` (path, content), a base rootfs with `base` dirs, and an empty layer dir.
struct Fixture {
    _dir: tempfile::TempDir,
    context: Context,
    base: PathBuf,
    layer: PathBuf,
}

impl Fixture {
    fn new(files: &[(&str, &str)], base_dirs: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        for (p, content) in files {
            let p = ctx.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, content).unwrap();
        }
        std::fs::create_dir_all(&ctx).unwrap();
        let base = dir.path().join("base");
        for d in base_dirs {
            std::fs::create_dir_all(base.join(d.trim_start_matches('/'))).unwrap();
        }
        std::fs::create_dir_all(&base).unwrap();
        let layer = dir.path().join("layer");
        std::fs::create_dir(&layer).unwrap();
        let context = Context::load(&ctx, &frontend::DockerIgnore::parse("")).unwrap();
        Self {
            _dir: dir,
            context,
            base,
            layer,
        }
    }

    fn copy(&self, srcs: &[&str], dest: &str, tweak: impl FnOnce(&mut Copy)) -> anyhow::Result<()> {
        let mut c = Copy {
            source: CopySource::Context,
            srcs: srcs.iter().map(|s| (*s).to_owned()).collect(),
            dest: dest.to_owned(),
            chown: None,
            chmod: None,
            exclude: vec![],
            unpack: false,
            parents: false,
            inline: vec![],
        };
        tweak(&mut c);
        let view = MergedView::new(vec![self.base.clone()]);
        exec::copy::copy(&c, &self.context, None, &view, &self.layer)
    }

    /// Every regular file of the layer, as `path=content`, sorted.
    fn files(&self) -> Vec<String> {
        let mut out: Vec<String> = walkdir::WalkDir::new(&self.layer)
            .into_iter()
            .map(Result::unwrap)
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                let rel = e
                    .path()
                    .strip_prefix(&self.layer)
                    .unwrap()
                    .display()
                    .to_string();
                format!("/{rel}={}", std::fs::read_to_string(e.path()).unwrap())
            })
            .collect();
        out.sort();
        out
    }

    fn path(&self, p: &str) -> PathBuf {
        self.layer.join(p.trim_start_matches('/'))
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn a_file_to_a_path_without_slash_is_written_at_that_path() {
    let f = Fixture::new(&[("a.txt", "A")], &[]);
    f.copy(&["a.txt"], "/dest", |_| {}).unwrap();
    assert_eq!(f.files(), ["/dest=A"]);
}

#[test]
fn a_trailing_slash_means_into_that_directory() {
    let f = Fixture::new(&[("a.txt", "A")], &[]);
    f.copy(&["a.txt"], "/dir/", |_| {}).unwrap();
    assert_eq!(f.files(), ["/dir/a.txt=A"]);
}

#[test]
fn an_existing_directory_destination_receives_the_file() {
    let f = Fixture::new(&[("a.txt", "A")], &["/etc"]);
    f.copy(&["a.txt"], "/etc", |_| {}).unwrap();
    assert_eq!(f.files(), ["/etc/a.txt=A"]);
}

#[test]
fn a_directory_source_copies_its_contents_not_itself() {
    let f = Fixture::new(&[("src/x", "X"), ("src/sub/y", "Y")], &[]);
    f.copy(&["src"], "/out/", |_| {}).unwrap();
    assert_eq!(f.files(), ["/out/sub/y=Y", "/out/x=X"]);
}

#[test]
fn a_wildcard_copies_every_match_into_the_directory() {
    let f = Fixture::new(&[("a.txt", "A"), ("b.txt", "B"), ("c.md", "C")], &[]);
    f.copy(&["*.txt"], "/t/", |_| {}).unwrap();
    assert_eq!(f.files(), ["/t/a.txt=A", "/t/b.txt=B"]);
}

#[test]
fn several_sources_go_into_a_directory() {
    let f = Fixture::new(&[("a", "A"), ("b", "B")], &[]);
    f.copy(&["a", "b"], "/many/", |_| {}).unwrap();
    assert_eq!(f.files(), ["/many/a=A", "/many/b=B"]);
}

#[test]
fn a_missing_source_names_itself() {
    let f = Fixture::new(&[("a", "A")], &[]);
    let e = f.copy(&["nope"], "/x", |_| {}).unwrap_err().to_string();
    assert!(e.contains("\"nope\"") && e.contains("build context"), "{e}");
}

#[test]
fn parents_keep_the_source_path_below_the_pivot() {
    let f = Fixture::new(&[("a/b/c.txt", "C"), ("a/d.txt", "D")], &[]);
    f.copy(&["a/b/c.txt", "a/./d.txt"], "/p/", |c| c.parents = true)
        .unwrap();
    assert_eq!(f.files(), ["/p/a/b/c.txt=C", "/p/d.txt=D"]);
}

#[test]
fn chmod_sets_the_mode_of_copied_files() {
    let f = Fixture::new(&[("run.sh", "#!/bin/sh\n")], &[]);
    f.copy(&["run.sh"], "/bin/", |c| c.chmod = Some(0o750))
        .unwrap();
    assert_eq!(mode(&f.path("/bin/run.sh")), 0o750);
}

#[test]
fn chown_with_numeric_ids_needs_no_passwd_file() {
    let f = Fixture::new(&[("a", "A")], &[]);
    // The test's own ids: owning a file by them needs no privilege.
    let (uid, gid) = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    f.copy(&["a"], "/o/", |c| c.chown = Some(format!("{uid}:{gid}")))
        .unwrap();
    let meta = std::fs::metadata(f.path("/o/a")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
}

#[test]
fn excluded_patterns_are_left_out() {
    let f = Fixture::new(&[("src/keep.rs", "K"), ("src/skip.log", "S")], &[]);
    f.copy(&["src"], "/s/", |c| {
        c.exclude = vec!["*.log".into(), "src/*.log".into()]
    })
    .unwrap();
    assert_eq!(f.files(), ["/s/keep.rs=K"]);
}

#[test]
fn an_inline_file_is_written_with_default_mode() {
    let f = Fixture::new(&[], &[]);
    f.copy(&[], "/etc/", |c| {
        c.source = CopySource::Inline {
            name: "conf".into(),
            content: "k=v\n".into(),
        };
    })
    .unwrap();
    assert_eq!(f.files(), ["/etc/conf=k=v\n"]);
    assert_eq!(mode(&f.path("/etc/conf")), 0o644);
}
