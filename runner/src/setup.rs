//! Sandbox setup failures: [`SetupError`], the [`Context`] that adds what was being done to an
//! I/O error, and [`die`], which reports one in the documented format (see the crate docs).

use std::fmt;
use std::io;

/// A sandbox setup failure: what was being done, and why it failed.
#[derive(Debug)]
pub(crate) struct SetupError {
    what: String,
    source: Option<io::Error>,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(e) => write!(f, "{}: {e}", self.what),
            None => f.write_str(&self.what),
        }
    }
}

impl SetupError {
    /// The OS error number of the cause, if it is an OS error.
    pub(crate) fn raw_os_error(&self) -> Option<i32> {
        self.source.as_ref().and_then(io::Error::raw_os_error)
    }

    pub(crate) fn msg(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            source: None,
        }
    }
}

/// Adds "what was being done" to an I/O error.
pub(crate) trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, SetupError>;
}

impl<T, E: Into<io::Error>> Context<T> for Result<T, E> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, SetupError> {
        self.map_err(|e| SetupError {
            what: what(),
            source: Some(e.into()),
        })
    }
}

/// Prints a message in the documented format (the caller reads lines starting `rbuild-runner: `).
#[allow(clippy::print_stderr)] // stderr is how the sandbox reports to the caller
pub(crate) fn report(msg: &dyn fmt::Display) {
    eprintln!("rbuild-runner: {msg}");
}

/// Prints a message in the documented format and exits with `code`.
#[allow(clippy::print_stderr)] // stderr is how the sandbox reports to the caller
pub(crate) fn die(code: i32, msg: &dyn fmt::Display) -> ! {
    eprintln!("rbuild-runner: {msg}");
    std::process::exit(code)
}

/// The setup error for a failed `unshare`: without `CAP_SYS_ADMIN` (a locked-down pod) it
/// says what to use instead.
pub(crate) fn unshare_error(e: io::Error, what: &str) -> SetupError {
    if e.raw_os_error() == Some(libc::EPERM) {
        SetupError::msg(
            "cannot create namespaces (Operation not permitted): this environment does not \
             allow them; run with --isolation=chroot",
        )
    } else {
        SetupError {
            what: format!("failed to create {what}"),
            source: Some(e),
        }
    }
}
