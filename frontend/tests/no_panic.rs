//! Random Dockerfile-ish inputs never panic `parse` or `lower` (a seeded generator, no dependencies).

use frontend::{lower, parse, BaseImages, DockerIgnore, LowerOptions};

struct AnyBase;

impl BaseImages for AnyBase {
    fn config(&mut self, reference: &str) -> Result<oci::ImageConfig, frontend::BoxError> {
        if reference.len().is_multiple_of(3) {
            return Err("not found".into());
        }
        let mut c = oci::ImageConfig::scratch();
        c.config.on_build = Some(vec!["RUN echo t".into(), "COPY <<X /x".into()]);
        Ok(c)
    }
}

/// xorshift64*: deterministic, so a failure reproduces from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        #[allow(clippy::cast_possible_truncation)]
        items[(self.next() % items.len() as u64) as usize]
    }
}

const FRAGMENTS: &[&str] = &[
    "FROM ",
    "RUN ",
    "COPY ",
    "ADD ",
    "ENV ",
    "ARG ",
    "LABEL ",
    "WORKDIR ",
    "USER ",
    "CMD ",
    "ENTRYPOINT ",
    "EXPOSE ",
    "VOLUME ",
    "SHELL ",
    "HEALTHCHECK ",
    "ONBUILD ",
    "STOPSIGNAL ",
    "MAINTAINER ",
    "run ",
    "FROMM ",
    "scratch",
    "img",
    "a AS b",
    " AS ",
    "b",
    "0",
    "1",
    "--from=",
    "--from=b ",
    "--mount=",
    "type=cache,target=/c",
    "type=bind,from=0,target=/x",
    "type=secret",
    "--chmod=",
    "755",
    "--chown=1:1",
    "--link ",
    "--network=none ",
    "--interval=",
    "5s",
    "CMD ",
    "NONE",
    "<<EOF",
    "<<-EOF",
    "<<'EOF'",
    "EOF",
    "\n",
    "\n",
    "\n",
    "\r\n",
    "\\\n",
    "\\",
    "`",
    "# escape=`\n",
    "# syntax=x\n",
    "#",
    " ",
    "\t",
    "\"",
    "'",
    "[",
    "]",
    "[\"a\", \"b\"]",
    "[1]",
    "=",
    "$",
    "${",
    "}",
    "${A:-x}",
    "${A:?}",
    "${A#*}",
    "${A/x/y}",
    "$A",
    "A=1",
    "80/udp",
    "1-3",
    "/",
    ".",
    "..",
    "é",
    "\u{feff}",
    "\0",
    "SIGTERM",
    "--",
    "---",
    "-",
    ",",
    "ro",
    "--parents ",
    "--exclude=*.md ",
    "--checksum=sha256:",
    "https://example.com/a.tar.gz",
    "# syntax=docker/dockerfile:1\n",
    "# syntax=other/frontend\n",
    "<<A <<B",
    "A",
    "B",
];

/// Iterations: 3000 by default; `FRONTEND_FUZZ_ITERS=N` runs N, `FRONTEND_FUZZ_SECS=T` runs for T seconds
/// instead, `FRONTEND_FUZZ_SEED=S` starts at seed S (so several long runs can cover disjoint seeds).
fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[allow(clippy::print_stderr)] // the count of inputs is the point of a long run
fn random_inputs_do_not_panic() {
    let first = env_u64("FRONTEND_FUZZ_SEED", 1);
    let secs = env_u64("FRONTEND_FUZZ_SECS", 0);
    let iters = if secs > 0 {
        u64::MAX - first
    } else {
        env_u64("FRONTEND_FUZZ_ITERS", 3000)
    };
    let started = std::time::Instant::now();
    let mut done = 0u64;
    for seed in first..first + iters {
        if secs > 0 && started.elapsed().as_secs() >= secs {
            break;
        }
        done += 1;
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let len = 1 + rng.next() % 40;
        let src: String = (0..len).map(|_| rng.pick(FRAGMENTS)).collect();
        let result = std::panic::catch_unwind(|| {
            if let Ok(df) = parse(&src) {
                let _ = df.dump();
                for target in [None, Some("b".to_owned())] {
                    let opts = LowerOptions {
                        target,
                        ..LowerOptions::default()
                    };
                    // Either outcome is fine; only a panic fails the test.
                    let _ = lower(&df, &opts, &mut AnyBase);
                }
            }
            let di = DockerIgnore::parse(&src);
            let _ = di.is_excluded(&src);
            let _ = di.may_include_under("a/b");
        });
        assert!(result.is_ok(), "seed {seed} panicked on {src:?}");
    }
    eprintln!(
        "no_panic: {done} inputs (seeds {first}..{}) in {:.1}s",
        first + done,
        started.elapsed().as_secs_f64()
    );
}
