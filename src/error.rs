//! Start-up errors: each names what happened, why, and what to do.

use std::fmt;

/// What kind of start-up failure an [`Error`] is.
///
/// See [`Error::kind`]'s example.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// io_uring cannot be used: disabled, blocked, or missing from the kernel.
    UringUnavailable,
    /// The listen address is taken.
    AddressInUse,
    /// The listen address cannot be bound for another reason (permission, not local).
    Bind,
    /// A configuration value is out of range.
    Config,
    /// A system call the master needs failed.
    System,
    /// The control socket, its directory or its peer belongs to another user (or is open
    /// to them), so it is not used: nothing is removed there, and no command is sent.
    Untrusted,
    /// Every worker slot failed repeatedly and was given up.
    WorkersFailed,
    /// Other threads were running when the master was to fork its workers: `fork` copies
    /// only the calling thread.
    ThreadsRunning,
}

/// A start-up failure. Its `Display` is one line: the cause, then the remedy.
///
/// See the [crate's first example](crate), whose `main` returns it.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Config, message)
    }

    pub(crate) fn system(what: &str, err: impl fmt::Display) -> Error {
        Error::new(ErrorKind::System, format!("{what} failed: {err}"))
    }

    /// The kind of failure.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Config, ErrorKind};
    ///
    /// let mut config = Config::default();
    /// config.reload_parallel = 0;
    /// let err = config.validate().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Config);
    /// assert!(err.to_string().contains("reload-parallel = 0 is out of range"));
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Explains why io_uring could not be set up, from the `errno` of `io_uring_setup`.
pub(crate) fn uring_unavailable(err: &std::io::Error) -> Error {
    let message = match err.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            match sysctl.as_str() {
                "1" | "2" => format!(
                    "io_uring is disabled by the sysctl kernel.io_uring_disabled={sysctl}; \
                     run `sysctl -w kernel.io_uring_disabled=0` (or add this user to \
                     kernel.io_uring_group when it is 1)"
                ),
                _ => "io_uring is blocked (io_uring_setup: operation not permitted), most \
                      likely by a container's seccomp profile; allow the syscalls \
                      io_uring_setup, io_uring_enter and io_uring_register (for Docker: \
                      --security-opt seccomp=PROFILE with them allowed)"
                    .to_string(),
            }
        }
        Some(libc::ENOSYS) => "this kernel has no io_uring (io_uring_setup: function not \
                               implemented); ringmaster needs Linux 6.1 or newer built with \
                               CONFIG_IO_URING"
            .to_string(),
        Some(libc::ENOMEM) => "io_uring could not allocate its rings (out of memory or \
                               locked-memory limit); raise `ulimit -l` or lower \
                               --connections-max"
            .to_string(),
        _ => format!("io_uring set-up failed: {err}; check the kernel's io_uring support"),
    };
    Error::new(ErrorKind::UringUnavailable, message)
}
