//! Overlay mounts: the stack of lower dirs, its options, and the two ways to hand it to the
//! kernel.
//!
//! * Linux 6.8 and newer take each lower dir on its own (`fsconfig(fd, "lowerdir+", dir)`), so
//!   a stack has no length limit beyond overlay's 500 layers.
//! * Older kernels take one `lowerdir=top:…:base` option inside mount(2)'s data, which the kernel
//!   copies from one page (4 KiB), NUL included; `fsconfig` strings are even shorter (256 bytes).
//!   As containerd and containers/storage do, the names are kept short: every lower dir gets a
//!   symlink named after its position (`0` for the base) in a directory the mounting process
//!   changes into first, so a 128-layer stack needs about 400 bytes. When a stack still does not
//!   fit (a very long work dir, or hundreds of layers), its lowest layers are first merged into
//!   a read-only overlay of their own, mounted in that directory as `m`, which becomes the base
//!   of the stack ([`Classic::plan`]). Overlay accepts another overlay as a lower dir (it stacks
//!   two file systems deep), and the merged view is exactly the stack it replaces.

use std::path::{Path, PathBuf};

use crate::setup::SetupError;

/// One overlay mount option: a key, and a value unless it is a flag.
pub(crate) type MountOption = (&'static str, Option<String>);

/// The most lower dirs one overlay takes (the kernel's `OVL_MAX_STACK`).
pub(crate) const MAX_LAYERS: usize = 500;

/// The name of the merged base of a flattened stack, in the links directory.
pub(crate) const MERGED: &str = "m";

/// The lower dirs of an overlay, base first, with every repeated dir kept only where it is
/// highest.
///
/// Overlay refuses a stack naming one directory twice (`ELOOP`, "overlapping layers"), which
/// happens when two steps produce the same layer (the same `COPY` twice with other steps in
/// between) and the store deduplicates their snapshots. Dropping the lower copy changes nothing
/// a lookup can see: every path in that layer is also in the higher copy, which a lookup
/// reaches first, so the lower copy is never consulted for those paths (a file stops the
/// lookup; a directory is merged downwards, but its entries are the same entries, already
/// found higher, and a whiteout or opaque mark is in both copies, so it hides the same lower
/// layers from the higher position). Paths the layer does not have pass through both copies
/// without being affected, and the layers between the two copies keep their place: they are
/// below the higher copy in both stacks. See: #17.
pub(crate) fn dedupe(lowers: &[PathBuf]) -> Vec<&Path> {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<&Path> = lowers
        .iter()
        .rev()
        .filter(|l| seen.insert(l.as_path()))
        .map(PathBuf::as_path)
        .collect();
    kept.reverse();
    kept
}

/// The options every sandbox overlay gets besides its dirs.
///
/// The upper dir becomes an OCI layer: no metadata-only copy-ups or redirects it could not
/// express, and no index tying the upper dir to these exact lower dirs. In a user namespace
/// `trusted.*` xattrs cannot be set, so overlay keeps its marks in `user.overlay.*`
/// (`userxattr`), and with it refuses to follow redirects (`off` still follows them).
/// `volatile` (only meaningful with an upper dir) skips the syncfs of the upper dir's file
/// system at unmount: see `rootfs::mount_overlay`.
pub(crate) fn options(user_namespace: bool, volatile: bool) -> Vec<MountOption> {
    let redirect_dir = if user_namespace { "nofollow" } else { "off" };
    let mut out: Vec<MountOption> = vec![
        ("redirect_dir", Some(redirect_dir.into())),
        ("metacopy", Some("off".into())),
        ("index", Some("off".into())),
    ];
    if user_namespace {
        out.push(("userxattr", None));
    }
    if volatile {
        out.push(("volatile", None));
    }
    out
}

/// The mount(2) data string `lowerdir=…,key=value,flag,…`.
fn data(lowerdir: &str, options: &[MountOption]) -> String {
    let mut s = format!("lowerdir={lowerdir}");
    for (key, value) in options {
        s.push(',');
        s.push_str(key);
        if let Some(v) = value {
            s.push('=');
            s.push_str(v);
        }
    }
    s
}

/// The link name of the lower dir at `index` (0 = base).
pub(crate) fn link_name(index: usize) -> String {
    index.to_string()
}

/// `lowerdir` value for the lower dirs `range` (base first), by link name, top first, with
/// `base` (the merged lower part) below them when given.
fn lowerdir(range: std::ops::Range<usize>, base: Option<&str>) -> String {
    let mut names: Vec<String> = range.rev().map(link_name).collect();
    if let Some(b) = base {
        names.push(b.to_owned());
    }
    names.join(":")
}

/// How a stack is mounted with the classic `lowerdir=` option within `limit` bytes of data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Classic {
    /// The number of lowest lower dirs merged first into a read-only overlay at [`MERGED`]
    /// (0: none, the stack fits as it is; otherwise at least 2).
    pub(crate) merged: usize,
    /// The data of the merged overlay (empty when `merged` is 0).
    pub(crate) merged_data: String,
    /// The data of the overlay itself.
    pub(crate) data: String,
}

impl Classic {
    /// Plans the mount of `count` lower dirs named by [`link_name`] with `options` (upper and
    /// work dirs included), in at most `limit` bytes of data per mount (the page size minus the
    /// NUL) and [`MAX_LAYERS`] lower dirs. `merged_options` are those of the read-only merged
    /// base.
    pub(crate) fn plan(
        count: usize,
        options: &[MountOption],
        merged_options: &[MountOption],
        limit: usize,
    ) -> Result<Self, SetupError> {
        let whole = data(&lowerdir(0..count, None), options);
        if whole.len() <= limit && count <= MAX_LAYERS {
            return Ok(Self {
                merged: 0,
                merged_data: String::new(),
                data: whole,
            });
        }
        // Merge as few layers as possible: the fewer in the merged base, the more of the stack
        // the kernel sees as separate layers (cheaper copy-ups, nothing else changes).
        for merged in 2..count {
            let top = data(&lowerdir(merged..count, Some(MERGED)), options);
            if top.len() > limit || count - merged + 1 > MAX_LAYERS {
                continue;
            }
            let bottom = data(&lowerdir(0..merged, None), merged_options);
            if bottom.len() > limit || merged > MAX_LAYERS {
                break;
            }
            return Ok(Self {
                merged,
                merged_data: bottom,
                data: top,
            });
        }
        Err(SetupError::msg(format!(
            "an overlay of {count} lower dirs does not fit in two stacked overlays of at most \
             {MAX_LAYERS} lower dirs and {limit} bytes of options each"
        )))
    }
}

/// Mounts an overlay of `lowers` (base first, at least one; two without an upper dir) at
/// `target` with the classic `lowerdir=` option (see the module docs). `links` is a new
/// directory for the short names (beside the upper dir, removed with the run's work dir);
/// `upper` is the upper and work dir, `None` for a read-only overlay.
pub(crate) fn mount_classic(
    links: &Path,
    lowers: &[&Path],
    upper: Option<(&Path, &Path)>,
    user_namespace: bool,
    volatile: bool,
    target: &Path,
) -> Result<(), SetupError> {
    use crate::setup::Context;
    use rustix::mount::MountFlags;

    fs_err::create_dir_all(links).ctx(|| "failed to create the overlay links dir".into())?;
    for (i, lower) in lowers.iter().enumerate() {
        let link = links.join(link_name(i));
        std::os::unix::fs::symlink(lower, &link)
            .ctx(|| format!("failed to create {}", link.display()))?;
    }
    let mut options: Vec<MountOption> = Vec::new();
    if let Some((upper, work)) = upper {
        options.push(("upperdir", Some(upper.to_string_lossy().into_owned())));
        options.push(("workdir", Some(work.to_string_lossy().into_owned())));
    }
    options.extend(self::options(user_namespace, volatile && upper.is_some()));
    let merged_options = self::options(user_namespace, false);
    let limit = crate::sys::page_size() - 1;
    let plan = Classic::plan(lowers.len(), &options, &merged_options, limit)?;
    let cstring = |s: String| {
        std::ffi::CString::new(s).map_err(|_| SetupError::msg("an overlay dir contains a NUL byte"))
    };
    let data = cstring(plan.data)?;
    let merged_data = cstring(plan.merged_data)?;
    // See: #19. nodev as on the new-API path: nodes a RUN makes land in its layer but do not open.
    let flags = if upper.is_some() {
        MountFlags::NODEV
    } else {
        MountFlags::RDONLY | MountFlags::NODEV
    };
    // The names are relative to the links dir: enter it for the mounts, then go back.
    let cwd = rustix::fs::open(
        ".",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .ctx(|| "failed to open the working directory".into())?;
    rustix::process::chdir(links).ctx(|| format!("failed to enter {}", links.display()))?;
    let mounted = (|| {
        if plan.merged > 0 {
            tracing::debug!(merged = plan.merged, "overlay: lowest layers merged first");
            fs_err::create_dir(MERGED).ctx(|| "failed to create the merged lower dir".into())?;
            rustix::mount::mount(
                "overlay",
                MERGED,
                "overlay",
                MountFlags::RDONLY | MountFlags::NODEV,
                merged_data.as_c_str(),
            )
            .ctx(|| format!("failed to merge the lowest {} lower dirs", plan.merged))?;
        }
        rustix::mount::mount("overlay", target, "overlay", flags, data.as_c_str())
            .ctx(|| "failed to create the overlay filesystem".into())
    })();
    rustix::process::fchdir(&cwd).ctx(|| "failed to return to the working directory".into())?;
    mounted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upper_options(userns: bool) -> Vec<MountOption> {
        let mut o: Vec<MountOption> = vec![
            ("upperdir", Some("/var/lib/rbuild/tmp/run-1/upper".into())),
            ("workdir", Some("/var/lib/rbuild/tmp/run-1/work/ovl".into())),
        ];
        o.extend(options(userns, true));
        o
    }

    #[test]
    fn repeated_lower_dir_is_kept_only_where_it_is_highest() {
        let l = |s: &str| PathBuf::from(s);
        let lowers = vec![
            l("/s/base"),
            l("/s/copy"),
            l("/s/run"),
            l("/s/copy"),
            l("/s/x"),
        ];
        assert_eq!(
            dedupe(&lowers),
            vec![
                Path::new("/s/base"),
                Path::new("/s/run"),
                Path::new("/s/copy"),
                Path::new("/s/x")
            ]
        );
        let thrice = vec![l("/a"), l("/a"), l("/b"), l("/a")];
        assert_eq!(dedupe(&thrice), vec![Path::new("/b"), Path::new("/a")]);
        assert!(dedupe(&[]).is_empty());
    }

    #[test]
    fn lowerdir_lists_short_relative_names_top_first() {
        let plan = Classic::plan(3, &upper_options(false), &options(false, false), 4095).unwrap();
        assert_eq!(plan.merged, 0);
        assert_eq!(
            plan.data,
            "lowerdir=2:1:0,upperdir=/var/lib/rbuild/tmp/run-1/upper,\
             workdir=/var/lib/rbuild/tmp/run-1/work/ovl,redirect_dir=off,metacopy=off,index=off,volatile"
        );
        let rootless = Classic::plan(1, &upper_options(true), &[], 4095).unwrap();
        assert!(rootless.data.starts_with("lowerdir=0,"));
        assert!(rootless.data.contains(",redirect_dir=nofollow,"));
        assert!(rootless.data.ends_with(",userxattr,volatile"));
    }

    #[test]
    fn a_128_layer_stack_fits_one_page_without_merging() {
        let plan = Classic::plan(128, &upper_options(true), &options(true, false), 4095).unwrap();
        assert_eq!(plan.merged, 0);
        assert!(plan.data.len() < 700, "{} bytes", plan.data.len());
        // 500 layers (overlay's own maximum) fit too.
        let plan = Classic::plan(500, &upper_options(true), &options(true, false), 4095).unwrap();
        assert_eq!(plan.merged, 0);
        assert!(plan.data.len() <= 4095);
    }

    #[test]
    fn the_page_limit_is_inclusive() {
        let options = upper_options(false);
        let exact = Classic::plan(40, &options, &[], 4095).unwrap().data.len();
        assert_eq!(Classic::plan(40, &options, &[], exact).unwrap().merged, 0);
        assert!(Classic::plan(40, &options, &[], exact - 1).unwrap().merged > 0);
    }

    #[test]
    fn a_stack_over_the_limit_merges_its_fewest_lowest_layers() {
        let options = upper_options(false);
        let merged_options = self::options(false, false);
        let whole = Classic::plan(100, &options, &merged_options, 4095)
            .unwrap()
            .data;
        // 10 bytes short: the top must lose at least 10 bytes of names, each layer up to "99:"
        // being 3 bytes, while the merged base adds "m" in place of its layers.
        let limit = whole.len() - 10;
        let plan = Classic::plan(100, &options, &merged_options, limit).unwrap();
        assert!(plan.merged >= 2);
        assert!(plan.data.len() <= limit && plan.merged_data.len() <= limit);
        assert!(plan.data.starts_with("lowerdir=99:98:"));
        let top_lowers = plan.data.split(',').next().unwrap();
        assert!(
            top_lowers.ends_with(&format!(":{}:{MERGED}", plan.merged)),
            "{top_lowers}"
        );
        let bottom = plan.merged - 1;
        assert_eq!(
            plan.merged_data,
            format!("lowerdir={}", lowerdir(0..plan.merged, None))
                + ",redirect_dir=off,metacopy=off,index=off"
        );
        assert!(plan.merged_data.starts_with(&format!("lowerdir={bottom}:")));
        assert!(plan.merged_data.contains(":1:0,"));
        // One layer fewer in the base would not fit: the boundary is tight.
        let one_less = data(&lowerdir(plan.merged - 1..100, Some(MERGED)), &options);
        assert!(one_less.len() > limit);
    }

    #[test]
    fn a_stack_deeper_than_overlay_takes_is_merged() {
        let options = upper_options(false);
        let plan = Classic::plan(600, &options, &[], 8191).unwrap();
        // The top takes as many as it may (499 and the merged base); the rest is merged.
        assert_eq!(plan.merged, 101);
        assert!(plan.data.starts_with("lowerdir=599:598:"));
        assert!(plan.data.contains(":102:101:m,"));
        assert!(plan.merged_data.starts_with("lowerdir=100:99:"));
        assert!(plan.merged_data.ends_with(":1:0"));
    }

    #[test]
    fn a_stack_that_cannot_fit_even_merged_is_a_clear_error() {
        let options = upper_options(false);
        let e = Classic::plan(2000, &options, &[], 4095).unwrap_err();
        assert!(e.to_string().contains("2000 lower dirs"), "{e}");
        // Options alone longer than the limit.
        assert!(Classic::plan(2, &options, &[], 20).is_err());
    }
}
