//! The build graph: a DAG of nodes, each an [`Op`] on the outputs of its input nodes.
//!
//! The frontend lowers a Dockerfile to a [`BuildGraph`]; the solver computes cache keys over it and hands
//! nodes to a worker. This crate does no I/O. Every node keeps the [`Span`] of the instruction it came
//! from, so a failure can point at its Dockerfile line. Nodes are stored in topological order: a node's
//! inputs always precede it.
//!
//! ```
//! use graph::{BuildGraph, Op, Exec};
//! let mut g = BuildGraph::default();
//! let base = g.add(Op::Scratch, vec![], None, "FROM scratch".into());
//! let run = g.add(Op::Exec(Exec::shell("true")), vec![base], None, "RUN true".into());
//! assert_eq!(g.ancestors(run).len(), 2);
//! ```
#![forbid(unsafe_code)]

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Index of a node in its [`BuildGraph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub usize);

/// A region of the Dockerfile: byte offsets (not chars) of the instruction, and its 1-based first line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Span {
    /// Byte offset of the first byte.
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
    /// 1-based line of `start`.
    pub line: usize,
    /// 1-based column of `start`, in chars.
    pub column: usize,
}

/// Network mode of a RUN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The host network (BuildKit's default on this kind of host).
    #[default]
    Default,
    /// A fresh network namespace with only loopback.
    None,
    /// The host network, explicitly.
    Host,
}

/// How RUN steps running at the same time share a cache mount (`sharing=`); encoded as BuildKit spells
/// it (`shared`, `private`, `locked`), so cache keys did not move when this became an enum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    /// Everyone uses the one directory at once (the default).
    #[default]
    Shared,
    /// One user gets the directory; the others get a fresh, empty one each.
    Private,
    /// One user at a time; the others wait.
    Locked,
}

impl std::str::FromStr for Sharing {
    type Err = String;

    /// Parses `shared`, `private` or `locked` (any case).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "shared" => Ok(Self::Shared),
            "private" => Ok(Self::Private),
            "locked" => Ok(Self::Locked),
            _ => Err(format!("unsupported sharing value {s:?}")),
        }
    }
}

/// Where a mount's contents come from (`RUN --mount`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Mount {
    /// Persistent cache directory (`type=cache`).
    Cache {
        /// Cache id (defaults to the target).
        id: String,
        /// Mount point in the container.
        target: String,
        /// Read-only.
        readonly: bool,
        /// How concurrent builds share the directory.
        sharing: Sharing,
        /// Mode of a newly created cache dir.
        mode: u32,
        /// Owner of a newly created cache dir.
        uid: u32,
        /// Group of a newly created cache dir.
        gid: u32,
        /// Input (index into the node's inputs) whose `source` seeds a new, empty cache dir (`from=`).
        /// Left out of the encoding when absent, so other cache mounts keep their keys.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<usize>,
        /// Path in `from` copied into a new cache dir (`source=`); empty for its root.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        source: String,
    },
    /// Bind of a directory from an input node or the context (`type=bind`); input given by index into
    /// the node's inputs, `None` for the build context.
    Bind {
        /// Index into the node's inputs; `None` means the build context.
        input: Option<usize>,
        /// Path inside the source.
        source: String,
        /// Mount point.
        target: String,
        /// Writes allowed (and discarded).
        readwrite: bool,
    },
    /// A tmpfs (`type=tmpfs`).
    Tmpfs {
        /// Mount point.
        target: String,
        /// Size limit in bytes, 0 for the default.
        size: u64,
    },
    /// A secret file (`type=secret`); the secret's value never enters the graph.
    Secret {
        /// Secret id.
        id: String,
        /// Mount point (empty when only `env` is used).
        target: String,
        /// Environment variable to set instead of or besides a file.
        env: Option<String>,
        /// Fail when the secret is not provided.
        required: bool,
        /// File mode.
        mode: u32,
        /// File owner.
        uid: u32,
        /// File group.
        gid: u32,
    },
    /// An SSH agent socket (`type=ssh`).
    Ssh {
        /// SSH id (`default`).
        id: String,
        /// Socket path.
        target: String,
        /// Fail when not provided.
        required: bool,
    },
}

/// Execute a command on the input rootfs (input 0); its filesystem changes become a layer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Exec {
    /// argv; shell form is already wrapped in the stage's SHELL.
    pub args: Vec<String>,
    /// `KEY=value` entries, in order (image ENV plus build ARGs in scope).
    pub env: Vec<String>,
    /// Absolute working directory; created if missing.
    pub cwd: String,
    /// `user[:group]`, names resolved by the worker from the rootfs; empty for root.
    pub user: String,
    /// Network mode.
    pub network: Network,
    /// Extra mounts.
    pub mounts: Vec<Mount>,
    /// `RUN --security`; left out of the encoding when `sandbox`, so the keys of other RUNs stay.
    #[serde(default, skip_serializing_if = "Security::is_sandbox")]
    pub security: Security,
    /// `RUN --device` (CDI device names); left out of the encoding when empty, so the keys of
    /// other RUNs stay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
}

/// A CDI device a RUN asks for (`RUN --device=vendor.com/class=name[,required]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Device {
    /// `vendor.com/class=name`, `vendor.com/class=*` (all) or `vendor.com/class` (the first).
    pub name: String,
    /// Fail when no CDI spec has it (otherwise the RUN goes on without it, with a warning).
    pub required: bool,
}

/// `RUN --security=sandbox|insecure`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Docker's default capabilities and seccomp profile.
    #[default]
    Sandbox,
    /// All capabilities, no seccomp filter; needs the `security.insecure` entitlement.
    Insecure,
}

impl Security {
    #[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
    pub fn is_sandbox(&self) -> bool {
        *self == Security::Sandbox
    }
}

impl Exec {
    /// `/bin/sh -c script` as root in `/`, with no env.
    pub fn shell(script: &str) -> Self {
        Self {
            args: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: Vec::new(),
            cwd: "/".into(),
            user: String::new(),
            network: Network::Default,
            mounts: Vec::new(),
            security: Security::Sandbox,
            devices: Vec::new(),
        }
    }
}

/// Where COPY reads from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum CopySource {
    /// The build context (after .dockerignore).
    Context,
    /// The rootfs of the node's input at this index (`COPY --from`).
    Input {
        /// Index into the node's inputs.
        index: usize,
    },
    /// Inline content (`COPY <<EOF`): file name and bytes.
    Inline {
        /// File name the heredoc creates.
        name: String,
        /// Content.
        content: String,
    },
}

/// Copy files onto the input rootfs (input 0) as a new layer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Copy {
    /// Source of the files.
    pub source: CopySource,
    /// Source paths or wildcard patterns, relative to the source root (leading `/` allowed).
    pub srcs: Vec<String>,
    /// Destination, absolute (already joined with WORKDIR); a trailing `/` means "into this directory".
    pub dest: String,
    /// `--chown` as written (`user[:group]`, names resolved from the destination rootfs).
    pub chown: Option<String>,
    /// `--chmod` as octal mode bits.
    pub chmod: Option<u32>,
    /// Patterns excluded (`--exclude`).
    pub exclude: Vec<String>,
    /// ADD semantics: unpack local tar archives.
    pub unpack: bool,
    /// `COPY --parents`: keep each source's path (below an optional `/./` pivot) under `dest`.
    /// Left out of the encoding when false, so cache keys of other copies do not change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parents: bool,
    /// More inline files (`COPY <<A <<B /dst/`, or heredocs beside other sources), each written into
    /// `dest` like a file source. Left out of the encoding when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inline: Vec<InlineFile>,
}

/// A file given inline in the Dockerfile (a COPY/ADD heredoc).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InlineFile {
    /// File name (the heredoc's delimiter).
    pub name: String,
    /// Content, expanded unless the delimiter was quoted.
    pub content: String,
}

/// Create a directory (WORKDIR) on the input rootfs, owned by `user`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mkdir {
    /// Absolute path.
    pub path: String,
    /// Owner as `user[:group]`; empty for root.
    pub user: String,
}

/// A file downloaded over HTTP(S) (`ADD URL`). The node's rootfs holds only `/{filename}` (mode 0600, mtime
/// from `Last-Modified`); the ADD is a copy from it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Http {
    /// `http://` or `https://` URL, as written after expansion.
    pub url: String,
    /// `sha256:<hex>` the content must have (`ADD --checksum`). With it, the checksum is the content key
    /// and nothing is downloaded when the store already has that blob.
    pub checksum: Option<String>,
    /// Name of the file in the node's rootfs.
    pub filename: String,
}

/// A git checkout (`ADD <git URL> /dst`): the tree of one commit of a remote repository.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Git {
    /// The remote, without the `#fragment` (`https://host/org/repo.git`, `git@host:org/repo.git`, …).
    pub remote: String,
    /// Branch, tag or commit from the fragment (`#ref:subdir`); `None` is the remote's HEAD.
    pub reference: Option<String>,
    /// Directory of the repository to take, from the fragment; `None` is the whole tree.
    pub subdir: Option<String>,
    /// Keep `.git` (`ADD --keep-git-dir`).
    pub keep_git_dir: bool,
    /// The commit the reference must resolve to (`ADD --checksum=<commit>`).
    pub checksum: Option<String>,
}

/// What a node does.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    /// An empty rootfs (`FROM scratch`).
    Scratch,
    /// A base image, by reference as written after ARG expansion; the worker resolves it to a digest.
    Image {
        /// Image reference.
        reference: String,
        /// The platform to resolve it for (`os/arch[/variant]`) when not the build platform's: a stage
        /// `FROM --platform=$BUILDPLATFORM` has the same node (and cache key) for every target platform.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        platform: Option<String>,
    },
    /// RUN.
    Exec(Exec),
    /// COPY / ADD.
    Copy(Copy),
    /// WORKDIR creation.
    Mkdir(Mkdir),
    /// A download (`ADD URL`).
    Http(Http),
    /// A git checkout (`ADD <git URL>`).
    Git(Git),
    /// `COPY --link`: the layers of input 1 stacked on input 0, without reading or writing any file.
    Merge,
}

impl Op {
    /// Canonical bytes of the op for cache keys: JSON with fields in declaration order (stable by
    /// construction; changing a field's name or order is a cache-key format change).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("ops are plain data and always serialize")
    }
}

/// A node of the graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// This node's id.
    pub id: NodeId,
    /// What it does.
    pub op: Op,
    /// Inputs; input 0 is the rootfs the op works on (for Exec, Copy, Mkdir).
    pub inputs: Vec<NodeId>,
    /// The instruction it came from.
    pub span: Option<Span>,
    /// What the node is called and where it stands in its stage; displayed as BuildKit prints it:
    /// `[build 2/4] RUN make`.
    pub name: StepName,
}

/// The name of a node: its stage, its place there, and the instruction text, kept apart so that progress
/// and miss explanations never parse a display string back.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StepName {
    /// The stage as BuildKit labels it in a multi-stage build (`build`, `stage-1`); empty otherwise.
    pub stage: String,
    /// Where the node stands in its stage.
    pub place: Place,
    /// The instruction (or source) text: `RUN make`, `https://example.com/a.tgz`.
    pub text: String,
}

/// Where a node stands in its stage.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Place {
    /// The `index`-th of the stage's `total` instructions (1-based; FROM is the first).
    Step {
        /// 1-based position.
        index: usize,
        /// Instructions of the stage, FROM included.
        total: usize,
    },
    /// A source an instruction reads (`download`, `git`): its own node before the instruction's.
    Source(String),
    /// A node of no instruction (tests, internal helpers): the text alone.
    Other,
}

impl StepName {
    /// The `index`-th of `total` instructions of stage `stage` (empty for a single-stage build).
    pub fn step(stage: &str, index: usize, total: usize, text: impl Into<String>) -> Self {
        Self {
            stage: stage.to_owned(),
            place: Place::Step { index, total },
            text: text.into(),
        }
    }

    /// A source node (`kind` is `download` or `git`) of stage `stage`.
    pub fn source(stage: &str, kind: &str, text: impl Into<String>) -> Self {
        Self {
            stage: stage.to_owned(),
            place: Place::Source(kind.to_owned()),
            text: text.into(),
        }
    }

    /// The instruction text alone: `RUN make`.
    pub fn instruction(&self) -> &str {
        &self.text
    }

    /// A name for this node that does not change when its instruction's text does: stage and position
    /// (`build 2`), or stage and source kind. `None` for [`Place::Other`].
    pub fn identity(&self) -> Option<String> {
        let sep = if self.stage.is_empty() { "" } else { " " };
        match &self.place {
            Place::Step { index, total } => {
                let width = total.to_string().len();
                Some(
                    format!("{}{sep}{index:>width$}", self.stage)
                        .trim()
                        .to_owned(),
                )
            }
            Place::Source(kind) => Some(format!("{}{sep}{kind}", self.stage)),
            Place::Other => None,
        }
    }
}

impl std::fmt::Display for StepName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.stage.is_empty() { "" } else { " " };
        match &self.place {
            Place::Step { index, total } => {
                let width = total.to_string().len();
                write!(
                    f,
                    "[{}{sep}{index:>width$}/{total}] {}",
                    self.stage, self.text
                )
            }
            Place::Source(kind) => write!(f, "[{}{sep}{kind}] {}", self.stage, self.text),
            Place::Other => f.write_str(&self.text),
        }
    }
}

impl From<String> for StepName {
    fn from(text: String) -> Self {
        Self {
            stage: String::new(),
            place: Place::Other,
            text,
        }
    }
}

impl From<&str> for StepName {
    fn from(text: &str) -> Self {
        text.to_owned().into()
    }
}

/// A DAG of nodes in topological order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildGraph {
    nodes: Vec<Node>,
}

impl BuildGraph {
    /// Adds a node whose inputs are already in the graph, returning its id.
    ///
    /// # Panics
    /// If an input is not already in the graph (which would break topological order).
    pub fn add(
        &mut self,
        op: Op,
        inputs: Vec<NodeId>,
        span: Option<Span>,
        name: StepName,
    ) -> NodeId {
        let id = NodeId(self.nodes.len());
        assert!(
            inputs.iter().all(|i| i.0 < id.0),
            "node inputs must already be in the graph"
        );
        self.nodes.push(Node {
            id,
            op,
            inputs,
            span,
            name,
        });
        id
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    /// Mutable access to a node (the frontend renames nodes once a stage's length is known).
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.0]
    }

    /// All nodes, inputs first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `target` and every node it depends on, sorted (so in topological order).
    pub fn ancestors(&self, target: NodeId) -> BTreeSet<NodeId> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![target];
        while let Some(id) = stack.pop() {
            if seen.insert(id) {
                stack.extend(self.node(id).inputs.iter().copied());
            }
        }
        seen
    }

    /// `nodes` and every node that reads one of them, directly or through others.
    pub fn with_dependents(&self, nodes: &[NodeId]) -> BTreeSet<NodeId> {
        let mut out: BTreeSet<NodeId> = nodes.iter().copied().collect();
        // Inputs precede their node, so one pass in order reaches every dependent.
        for n in &self.nodes {
            if n.inputs.iter().any(|i| out.contains(i)) {
                out.insert(n.id);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dependents_are_found_through_every_path() {
        use super::{BuildGraph, Op};
        let mut g = BuildGraph::default();
        let a = g.add(Op::Scratch, vec![], None, "a".into());
        let b = g.add(Op::Scratch, vec![], None, "b".into());
        let c = g.add(Op::Merge, vec![a, b], None, "c".into());
        let d = g.add(Op::Merge, vec![b, c], None, "d".into());
        let e = g.add(Op::Scratch, vec![], None, "e".into());
        let got: Vec<_> = g.with_dependents(&[a]).into_iter().collect();
        assert_eq!(got, [a, c, d]);
        assert!(!g.with_dependents(&[a, b]).contains(&e));
    }

    #[test]
    fn step_names_display_as_buildkit_and_keep_their_parts() {
        use super::{Place, StepName};
        let single = StepName::step("", 3, 11, "RUN make");
        assert_eq!(single.to_string(), "[ 3/11] RUN make");
        assert_eq!(single.identity().as_deref(), Some("3"));
        assert_eq!(single.instruction(), "RUN make");
        let multi = StepName::step("build", 2, 4, "COPY . /src");
        assert_eq!(multi.to_string(), "[build 2/4] COPY . /src");
        assert_eq!(multi.identity().as_deref(), Some("build 2"));
        let dl = StepName::source("build", "download", "https://example.com/a");
        assert_eq!(dl.to_string(), "[build download] https://example.com/a");
        assert_eq!(dl.identity().as_deref(), Some("build download"));
        let other = StepName::from("link COPY a /a");
        assert_eq!(other.place, Place::Other);
        assert_eq!(other.to_string(), "link COPY a /a");
        assert_eq!(other.identity(), None);
    }

    #[test]
    fn sharing_encodes_as_buildkit_spells_it() {
        use super::Sharing;
        assert_eq!(
            serde_json::to_string(&Sharing::Locked).unwrap(),
            "\"locked\""
        );
        assert_eq!("PRIVATE".parse::<Sharing>(), Ok(Sharing::Private));
        assert!("sometimes".parse::<Sharing>().is_err());
    }

    use super::*;

    #[test]
    fn ancestors_prune_unrelated_branches() {
        let mut g = BuildGraph::default();
        let a = g.add(Op::Scratch, vec![], None, "a".into());
        let slow = g.add(
            Op::Exec(Exec::shell("sleep 6")),
            vec![a],
            None,
            "slow".into(),
        );
        let fast = g.add(Op::Exec(Exec::shell("true")), vec![a], None, "fast".into());
        let both = g.add(
            Op::Exec(Exec::shell("x")),
            vec![slow, fast],
            None,
            "both".into(),
        );
        assert_eq!(g.ancestors(fast), BTreeSet::from([a, fast]));
        assert_eq!(g.ancestors(both).len(), 4);
    }

    #[test]
    fn copy_parents_only_encoded_when_set() {
        let mut c = Copy {
            source: CopySource::Context,
            srcs: vec!["a".into()],
            dest: "/d/".into(),
            chown: None,
            chmod: None,
            exclude: vec![],
            unpack: false,
            parents: false,
            inline: vec![],
        };
        let plain = String::from_utf8(Op::Copy(c.clone()).canonical_bytes()).unwrap();
        assert!(!plain.contains("parents"), "{plain}");
        let back: Op = serde_json::from_str(&plain).unwrap();
        assert_eq!(back, Op::Copy(c.clone()));
        c.parents = true;
        let with = String::from_utf8(Op::Copy(c).canonical_bytes()).unwrap();
        assert!(
            with.ends_with(r#""unpack":false,"parents":true}"#),
            "{with}"
        );
    }

    #[test]
    fn canonical_bytes_distinguish_ops() {
        let a = Op::Exec(Exec::shell("true")).canonical_bytes();
        let b = Op::Exec(Exec::shell("false")).canonical_bytes();
        assert_ne!(a, b);
        assert_eq!(a, Op::Exec(Exec::shell("true")).canonical_bytes());
    }
}
