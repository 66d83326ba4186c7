//! Rootless mode: rbuild run by an ordinary user, in a user namespace with the user's subordinate
//! ids (scripts/install-deps.sh creates the users `rbuild-rootless`, with ids in /etc/subuid and
//! /etc/subgid, and `rbuild-nosubids`, without).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::{expect_success, require, sh, skopeo_umoci_unpack, Env, Registry, RBUILD};

const USER: &str = "rbuild-rootless";
const NO_SUBIDS_USER: &str = "rbuild-nosubids";

/// The numeric id of a user, failing (never skipping) when the user does not exist.
fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().expect("id");
    assert!(
        out.status.success(),
        "user {user} is missing: run scripts/install-deps.sh (as root) to create the rootless test users"
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("numeric uid")
}

/// A scratch dir owned by `user`, with a copy of the rbuild binary it can execute (the build
/// tree may sit under a home directory other users cannot enter).
struct UserDir {
    user: &'static str,
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// More environment for every rbuild it runs.
    env: Vec<(&'static str, &'static str)>,
}

impl UserDir {
    fn new(user: &'static str) -> Self {
        require("/usr/bin/setpriv", "util-linux");
        let uid = uid_of(user);
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("rbuild");
        std::fs::copy(RBUILD, &bin).expect("copy rbuild");
        for sub in ["home", "data"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        sh(Command::new("chown")
            .args(["-R", &format!("{uid}:{uid}")])
            .arg(dir.path()));
        Self {
            user,
            dir,
            bin,
            env: Vec::new(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The default store of this user (`$XDG_DATA_HOME/rbuild`).
    fn store(&self) -> PathBuf {
        self.path().join("data/rbuild")
    }

    /// Runs rbuild as the user, with a clean environment (HOME and XDG_DATA_HOME in this dir).
    fn rbuild(&self, args: &[&str]) -> Output {
        Command::new("setpriv")
            .args([
                "--reuid",
                self.user,
                "--regid",
                self.user,
                "--init-groups",
                "--",
            ])
            .arg(&self.bin)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", self.path().join("home"))
            .env("XDG_DATA_HOME", self.path().join("data"))
            .env("NO_COLOR", "1")
            .envs(self.env.iter().copied())
            .current_dir(self.path())
            .stdin(Stdio::null())
            .output()
            .expect("running rbuild through setpriv")
    }

    fn ok(&self, args: &[&str]) -> (String, String) {
        expect_success(&self.rbuild(args), args)
    }

    /// A context dir owned by the user.
    fn context(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let ctx = self.path().join(name);
        std::fs::create_dir_all(&ctx).expect("mkdir");
        for (file, content) in files {
            std::fs::write(ctx.join(file), content).expect("write");
        }
        let uid = uid_of(self.user);
        sh(Command::new("chown")
            .args(["-R", &format!("{uid}:{uid}")])
            .arg(&ctx));
        ctx
    }
}

/// A base image made by root with files owned by several users, a directory the rootless build
/// deletes and recreates (an opaque directory in overlay terms), and a device node (which a user
/// namespace cannot create). Returns its reference in the registry.
fn push_base(env: &Env, reg: &Registry) -> String {
    env.busybox();
    let ctx = env.context(
        "base",
        &[(
            "Dockerfile",
            "FROM busybox:local\n\
             RUN mkdir -p /opt/keep /opt/gone /home/app \
             && echo k > /opt/keep/f && echo g > /opt/gone/f \
             && echo o > /home/app/owned && chown -R 1000:1000 /home/app \
             && mknod /opt/null c 1 3\n",
        )],
    );
    let tag = format!("{}/rootless/base:1", reg.addr);
    env.ok(&["build", "-t", &tag, "--push", ctx.to_str().unwrap()]);
    tag
}

#[test]
fn rootless_build_pulls_runs_and_pushes_an_image_other_tools_read() {
    round_trip(UserDir::new(USER));
}

/// Linux 5.10 (Debian 11, Amazon Linux 2) has no overlay in a user namespace: rootless builds
/// mount with fuse-overlayfs, and the image is the same as with kernel overlay. Here the kernel
/// has it, so the probe is told to act as 5.10's (RBUILD_KERNEL_FALLBACKS=userns-overlay); the
/// kernels test runs the real 5.10 in a VM.
#[test]
fn rootless_without_kernel_overlay_in_a_user_namespace_uses_fuse_overlayfs() {
    require("/usr/bin/fuse-overlayfs", "fuse-overlayfs");
    let mut user = UserDir::new(USER);
    user.env.push(("RBUILD_KERNEL_FALLBACKS", "userns-overlay"));
    let (info, _) = user.ok(&["info", "--format", "json"]);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    let overlay = info["kernel"]["features"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["name"] == "overlay"))
        .unwrap_or_else(|| panic!("no overlay feature in {info}"));
    assert!(
        overlay["path"].as_str().unwrap().contains("fuse-overlayfs"),
        "/dev/fuse must be usable by the rootless user (scripts/install-deps.sh): {overlay}"
    );
    round_trip(user);
}

/// A rootless build pulls from a registry, deletes and recreates what the base has, runs, pushes,
/// and what it pushed is what skopeo and umoci see.
fn round_trip(user: UserDir) {
    require("/usr/bin/skopeo", "skopeo");
    require("/usr/bin/umoci", "umoci");
    require("/usr/bin/newuidmap", "uidmap");
    let host_uid = uid_of(USER);
    let env = Env::new();
    let reg = Registry::start();
    let base = push_base(&env, &reg);

    let ctx = user.context(
        "app",
        &[
            ("hello.txt", "hello from a user\n"),
            (
                "Dockerfile",
                &format!(
                    "FROM {base}\n\
                     RUN id -u > /whoami && cat /proc/self/uid_map > /uidmap \
                     && stat -c %u /home/app/owned > /owner\n\
                     RUN rm -rf /opt/gone && mkdir /opt/gone && echo new > /opt/gone/n && rm /opt/keep/f\n\
                     RUN echo mine > /mine && chown 2000:3000 /mine\n\
                     RUN --network=none ls /sys/class/net > /nets\n\
                     RUN --mount=type=cache,target=/cache,uid=1000 touch /cache/warm && stat -c %u /cache > /cacheowner\n\
                     COPY --chown=1000:1000 hello.txt /home/app/hello.txt\n\
                     CMD [\"sh\", \"-c\", \"cat /mine /whoami /owner /nets /cacheowner; cat /uidmap\"]\n"
                ),
            ),
        ],
    );
    let out = format!("{}/rootless/app:1", reg.addr);
    let (_, stderr) = user.ok(&[
        "build",
        "--progress",
        "plain",
        "-t",
        &out,
        "--push",
        ctx.to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("device node left out"),
        "the base's device node is reported as skipped: {stderr}"
    );

    // The store is the user's default one, owned by the user on the host.
    let store = user.store();
    assert_eq!(
        std::fs::metadata(&store)
            .unwrap_or_else(|e| panic!("no store at {}: {e}", store.display()))
            .uid(),
        host_uid
    );

    // Run as the user: root inside, the user's uid (and subordinate ids) outside.
    let (stdout, _) = user.ok(&["run", "--rm", &out]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[..5], ["mine", "0", "1000", "lo", "1000"], "{stdout}");
    let uid_map: Vec<Vec<&str>> = lines[5..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        uid_map[0],
        ["0", &host_uid.to_string(), "1"],
        "container root is the user: {stdout}"
    );
    assert!(
        uid_map.len() >= 2 && uid_map[1][0] == "1",
        "subordinate ids follow: {stdout}"
    );

    // What was pushed, as skopeo and umoci see it (run as root, outside any user namespace).
    let rootfs = skopeo_umoci_unpack(env.dir.path(), &out);
    let owner = |p: &str| {
        let m = std::fs::symlink_metadata(rootfs.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        (m.uid(), m.gid())
    };
    assert_eq!(
        owner("mine"),
        (2000, 3000),
        "ids inside the namespace are the layer's ids"
    );
    assert_eq!(owner("home/app/hello.txt"), (1000, 1000));
    assert_eq!(owner("home/app/owned"), (1000, 1000));
    assert_eq!(owner("whoami"), (0, 0));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("opt/gone/n")).unwrap(),
        "new\n"
    );
    assert!(
        !rootfs.join("opt/gone/f").exists(),
        "the recreated directory is opaque: the base's file stays deleted"
    );
    assert!(!rootfs.join("opt/keep/f").exists(), "the whiteout applies");
    assert!(
        rootfs.join("opt/null").symlink_metadata().is_ok(),
        "the base layer's device node is still in the image (only the snapshot lacks it)"
    );
    assert!(
        !rootfs.join("cache/warm").exists(),
        "cache mount contents never enter a layer"
    );

    // Nothing is left mounted on the host.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(user.path().to_str().unwrap()),
        "a rootless mount leaked to the host: {mounts}"
    );

    // A second build is all cache hits, and a rootless prune can delete files owned by
    // subordinate ids (the user alone could not).
    let (_, stderr) = user.ok(&[
        "build",
        "--progress",
        "plain",
        "-t",
        "again",
        ctx.to_str().unwrap(),
    ]);
    assert!(!stderr.contains("cache miss"), "{stderr}");
    // The snapshots are in the kernel's format whichever overlay made them: no AUFS-style `.wh.`
    // names, no fuse-overlayfs xattrs.
    for entry in walkdir::WalkDir::new(user.store().join("snapshots")) {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy();
        assert!(!name.starts_with(".wh."), "{}", entry.path().display());
        if !entry.path_is_symlink() {
            let names = xattr::list(entry.path()).unwrap();
            for x in names {
                assert!(
                    !x.to_string_lossy().starts_with("user.fuseoverlayfs."),
                    "{} has {x:?}",
                    entry.path().display()
                );
            }
        }
    }
    user.ok(&["prune", "--all"]);
}

#[test]
fn rootless_without_subordinate_ids_says_what_to_do() {
    let user = UserDir::new(NO_SUBIDS_USER);
    let out = user.rbuild(&["images"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("rootless mode needs subordinate uids for user rbuild-nosubids")
            && stderr.contains("/etc/subuid")
            && stderr.contains("usermod --add-subuids"),
        "{stderr}"
    );
    assert!(!user.store().exists(), "nothing is created on failure");
    // Commands that need no store still work without subordinate ids.
    let out = user.rbuild(&["logout", "localhost:1"]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("rootless"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rootless_names_an_owner_outside_the_mapped_ids() {
    let env = Env::new();
    let reg = Registry::start();
    env.busybox();
    let ctx = env.context(
        "big",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN touch /big && chown 70000:70000 /big\n",
        )],
    );
    let base = format!("{}/rootless/bigid:1", reg.addr);
    env.ok(&["build", "-t", &base, "--push", ctx.to_str().unwrap()]);

    let user = UserDir::new(USER);
    let ctx = user.context(
        "app",
        &[("Dockerfile", &format!("FROM {base}\nRUN ls -ln /big\n"))],
    );
    let out = user.rbuild(&["build", "--progress", "plain", ctx.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("owner 70000:70000 is outside the ids of this user namespace")
            && stderr.contains("/etc/subuid"),
        "{stderr}"
    );
}

/// An emulated RUN rootless: binfmt_misc's handler (registered with the F flag, by root, once per
/// machine) serves a user namespace too, so a rootless `--platform linux/arm64` build runs arm64
/// code through qemu with no interpreter in the rootfs (#20).
#[test]
fn rootless_emulated_run_of_a_foreign_platform() {
    require("/usr/bin/qemu-aarch64-static", "qemu-user-static");
    require("/usr/bin/newuidmap", "uidmap");
    let arm64_busybox = Path::new("/var/cache/rbuild-test/arm64/busybox");
    assert!(
        arm64_busybox.exists(),
        "{} is missing: run scripts/install-deps.sh",
        arm64_busybox.display()
    );
    // Registering the handler is root's part (it is the machine's); the build is the user's.
    let env = Env::new();
    env.ok(&["binfmt", "--install", "arm64"]);
    let user = UserDir::new(USER);
    let ctx = user.context(
        "emu",
        &[(
            "Dockerfile",
            "FROM scratch\nCOPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
             RUN uname -m > /arch && id -u > /uid\n",
        )],
    );
    std::fs::copy(arm64_busybox, ctx.join("busybox")).expect("copy the arm64 busybox");
    sh(Command::new("chown")
        .arg(format!("{0}:{0}", uid_of(USER)))
        .arg(ctx.join("busybox")));
    let out = user.path().join("out");
    user.ok(&[
        "build",
        "--platform",
        "linux/arm64",
        "-o",
        &format!("type=local,dest={}", out.display()),
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(out.join("arch")).unwrap(),
        "aarch64\n"
    );
    assert_eq!(std::fs::read_to_string(out.join("uid")).unwrap(), "0\n");
}
