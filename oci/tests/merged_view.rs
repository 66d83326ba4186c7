//! MergedView over stacked overlay-format snapshots: whiteouts, opaque dirs, symlinks, copy_out.

use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use oci::MergedView;
use rustix::fs::{FileType, Mode};

fn write(path: &Path, content: &[u8]) {
    fs_err::create_dir_all(path.parent().unwrap()).unwrap();
    fs_err::write(path, content).unwrap();
}

fn whiteout(path: &Path) {
    fs_err::create_dir_all(path.parent().unwrap()).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        FileType::CharacterDevice,
        Mode::empty(),
        rustix::fs::makedev(0, 0),
    )
    .unwrap();
}

/// Base and upper snapshot, as a RUN over a base image would leave them.
struct Stack {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    upper: PathBuf,
    view: MergedView,
}

fn stack() -> Stack {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let upper = tmp.path().join("upper");
    fs_err::create_dir_all(&upper).unwrap();
    // base
    write(&base.join("usr/bin/sh"), b"shell");
    symlink("usr/bin", base.join("bin")).unwrap();
    write(&base.join("etc/a"), b"a");
    write(&base.join("etc/b"), b"b");
    write(&base.join("opt/x/1"), b"1");
    write(&base.join("opt/x/2"), b"2");
    write(&base.join("d/f"), b"lower child");
    write(&base.join("e"), b"lower file");
    // upper
    whiteout(&upper.join("etc/a"));
    write(&upper.join("etc/c"), b"c");
    write(&upper.join("opt/x/3"), b"3");
    xattr::set(upper.join("opt/x"), "trusted.overlay.opaque", b"y").unwrap();
    write(&upper.join("d"), b"file over dir");
    write(&upper.join("e/g"), b"dir over file");
    symlink("../../../../etc", upper.join("esc")).unwrap();
    symlink("/etc", upper.join("abs")).unwrap();
    symlink("loop2", upper.join("loop1")).unwrap();
    symlink("loop1", upper.join("loop2")).unwrap();
    let view = MergedView::new(vec![base.clone(), upper.clone()]);
    Stack {
        _tmp: tmp,
        base,
        upper,
        view,
    }
}

#[test]
fn whiteout_hides_lower_file() {
    let s = stack();
    assert_eq!(s.view.resolve("/etc/a", true).unwrap(), None);
    let b = s.view.resolve("/etc/b", true).unwrap().unwrap();
    assert_eq!(b.host_path, s.base.join("etc/b"));
    assert_eq!(b.merged_path, "/etc/b");
    assert!(!b.is_dir);
    assert_eq!(s.view.read_dir("/etc").unwrap(), vec!["b", "c"]);
    let etc = s.view.resolve("etc", true).unwrap().unwrap();
    assert_eq!(
        etc.host_path,
        s.upper.join("etc"),
        "a directory resolves to its topmost layer"
    );
    assert!(etc.is_dir);
}

#[test]
fn opaque_dir_hides_lower_children() {
    let s = stack();
    assert_eq!(s.view.read_dir("/opt/x").unwrap(), vec!["3"]);
    assert_eq!(s.view.resolve("/opt/x/1", true).unwrap(), None);
}

#[test]
fn file_over_dir_and_dir_over_file() {
    let s = stack();
    let d = s.view.resolve("/d", true).unwrap().unwrap();
    assert!(!d.is_dir);
    assert_eq!(s.view.resolve("/d/f", true).unwrap(), None);
    assert_eq!(s.view.read_dir("/e").unwrap(), vec!["g"]);
    let root = s.view.read_dir("/").unwrap();
    assert_eq!(
        root,
        vec!["abs", "bin", "d", "e", "esc", "etc", "loop1", "loop2", "opt", "usr"]
    );
}

#[test]
fn symlinks_resolve_inside_root() {
    let s = stack();
    let sh = s.view.resolve("/bin/sh", true).unwrap().unwrap();
    assert_eq!(sh.merged_path, "/usr/bin/sh");
    assert_eq!(sh.host_path, s.base.join("usr/bin/sh"));
    let bin = s.view.resolve("/bin", false).unwrap().unwrap();
    assert_eq!((bin.merged_path.as_str(), bin.is_dir), ("/bin", false));
    let bin = s.view.resolve("/bin", true).unwrap().unwrap();
    assert_eq!((bin.merged_path.as_str(), bin.is_dir), ("/usr/bin", true));
    assert_eq!(
        s.view.resolve("/bin/", false).unwrap().unwrap().merged_path,
        "/usr/bin"
    );
    // `../../..` clamps at the merged root instead of reaching the host.
    let esc = s.view.resolve("/esc/b", true).unwrap().unwrap();
    assert_eq!(esc.merged_path, "/etc/b");
    assert_eq!(esc.host_path, s.base.join("etc/b"));
    assert_eq!(
        s.view
            .resolve("/../../../etc/c", true)
            .unwrap()
            .unwrap()
            .host_path,
        s.upper.join("etc/c")
    );
    // An absolute target starts again at the merged root.
    assert_eq!(
        s.view
            .resolve("/usr/bin/../../abs/c", true)
            .unwrap()
            .unwrap()
            .merged_path,
        "/etc/c"
    );
    let err = s.view.resolve("/loop1", true).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
    assert!(s.view.resolve("/loop1", false).unwrap().is_some());
    // Through a file: missing.
    assert_eq!(s.view.resolve("/etc/b/x", true).unwrap(), None);
}

#[test]
fn copy_out_merges_layers() {
    let s = stack();
    fs_err::set_permissions(
        s.upper.join("etc/c"),
        std::fs::Permissions::from_mode(0o4750),
    )
    .unwrap();
    rustix::fs::chown(
        s.upper.join("etc/c"),
        Some(rustix::fs::Uid::from_raw(1000)),
        Some(rustix::fs::Gid::from_raw(1000)),
    )
    .unwrap();
    fs_err::set_permissions(
        s.upper.join("etc/c"),
        std::fs::Permissions::from_mode(0o4750),
    )
    .unwrap();
    xattr::set(s.upper.join("etc/c"), "user.test", b"v").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out/root");
    s.view.copy_out("/", &out, true).unwrap();
    let mut names: Vec<String> = walkdir::WalkDir::new(&out)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(&out)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "abs",
            "bin",
            "d",
            "e",
            "e/g",
            "esc",
            "etc",
            "etc/b",
            "etc/c",
            "loop1",
            "loop2",
            "opt",
            "opt/x",
            "opt/x/3",
            "usr",
            "usr/bin",
            "usr/bin/sh"
        ]
    );
    assert_eq!(fs_err::read(out.join("d")).unwrap(), b"file over dir");
    assert_eq!(
        fs_err::read_link(out.join("bin")).unwrap(),
        PathBuf::from("usr/bin")
    );
    let c = fs_err::metadata(out.join("etc/c")).unwrap();
    assert_eq!((c.mode() & 0o7777, c.uid(), c.gid()), (0o4750, 1000, 1000));
    assert_eq!(
        xattr::get(out.join("etc/c"), "user.test")
            .unwrap()
            .as_deref(),
        Some(b"v".as_slice())
    );
    assert_eq!(
        xattr::get(out.join("opt/x"), "trusted.overlay.opaque").unwrap(),
        None,
        "overlay xattrs dropped"
    );
    let src_mtime = fs_err::metadata(s.upper.join("etc")).unwrap().mtime();
    assert_eq!(
        fs_err::metadata(out.join("etc")).unwrap().mtime(),
        src_mtime
    );
    assert!(!fs_err::symlink_metadata(out.join("etc/b"))
        .unwrap()
        .file_type()
        .is_char_device());

    // A single file through a symlinked directory, and a symlink itself.
    s.view
        .copy_out("/bin/sh", &tmp.path().join("sh"), true)
        .unwrap();
    assert_eq!(fs_err::read(tmp.path().join("sh")).unwrap(), b"shell");
    s.view
        .copy_out("/bin", &tmp.path().join("binlink"), false)
        .unwrap();
    assert_eq!(
        fs_err::read_link(tmp.path().join("binlink")).unwrap(),
        PathBuf::from("usr/bin")
    );
    // Copying over an existing symlink replaces it rather than writing through it.
    let victim = tmp.path().join("victim");
    write(&victim, b"untouched");
    symlink(&victim, tmp.path().join("trap")).unwrap();
    s.view
        .copy_out("/etc/b", &tmp.path().join("trap"), true)
        .unwrap();
    assert_eq!(fs_err::read(&victim).unwrap(), b"untouched");
    assert_eq!(fs_err::read(tmp.path().join("trap")).unwrap(), b"b");
    let missing = s
        .view
        .copy_out("/etc/a", &tmp.path().join("a"), true)
        .unwrap_err();
    assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn unpacked_layers_stack_into_a_view() {
    // A base layer and a layer with a whiteout, through the tar round trip.
    let tmp = tempfile::tempdir().unwrap();
    let (src1, src2) = (tmp.path().join("src1"), tmp.path().join("src2"));
    write(&src1.join("app/old"), b"old");
    write(&src1.join("app/keep"), b"keep");
    whiteout(&src2.join("app/old"));
    write(&src2.join("app/new"), b"new");
    let mut snaps = Vec::new();
    for (i, src) in [src1, src2].iter().enumerate() {
        let mut blob = Vec::new();
        let info = oci::write_layer(src, &mut blob, &oci::LayerOptions::default()).unwrap();
        let snap = tmp.path().join(format!("snap{i}"));
        oci::unpack_layer(blob.as_slice(), info.media_type, &snap).unwrap();
        snaps.push(snap);
    }
    let view = MergedView::new(snaps);
    assert_eq!(view.read_dir("/app").unwrap(), vec!["keep", "new"]);
}
