//! Workers started from the binary on disk: how a reload runs new code.
//!
//! A reload forks each successor as ever, and the child then executes the binary found at
//! the path the server was started from (opened once per reload, `O_PATH`, so that every
//! successor of one reload runs the same file). The new image's `Server::run` sees
//! [`WORKER_ENV`], takes the descriptors it names (listening sockets, its two pipes, the
//! access log) and runs the worker with its own handler: the new code. The master stays:
//! its pid (systemd's `MAINPID`), its listening sockets and its control socket never move,
//! and a successor that does not start, exits, or is not ready in time fails the reload
//! while the old workers keep serving (the rolling reload's own guarantees). Workers
//! respawned after a crash run the image of their generation, never a path that may have
//! changed since. This is Node's cluster and PM2's reload, with nginx's rule that nothing
//! irreversible happens before the new code proved itself; see ARCHITECTURE.md for the
//! designs weighed.

use crate::config::Config;
use crate::config_file::CONFIG_ENV;
use crate::error::Error;
use crate::log::log;
use crate::worker;
use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// The environment variable that makes `Server::run` a worker of an existing master.
pub(crate) const WORKER_ENV: &str = "RINGMASTER_WORKER";

/// The path the server's binary was started from, for reloads to run what is there then:
/// `argv[0]` made absolute when it names a path (a deploy that switches a symbolic link or
/// renames a new file over it is followed), else the running executable's path.
pub(super) fn binary_path() -> Option<PathBuf> {
    let arg0 = PathBuf::from(std::env::args_os().next()?);
    if arg0.as_os_str().as_bytes().contains(&b'/') {
        return std::env::current_dir().ok().map(|cwd| cwd.join(arg0));
    }
    std::env::current_exe().ok()
}

/// Opens the binary at `path` for executing (`O_PATH`): each successor of a reload runs
/// this very file, whatever is renamed over the path meanwhile.
pub(super) fn open_binary(path: &std::path::Path) -> Result<OwnedFd, String> {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("the binary at {}: {e}", path.display()))
}

/// What a worker started from a binary is handed, named in [`WORKER_ENV`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Handed {
    pub(crate) slot: u32,
    /// The CPU to pin to; `None`: unpinned (`--cpu-affinity none`).
    pub(crate) cpu: Option<usize>,
    pub(crate) master: i32,
    pub(crate) accept_queue: u32,
    pub(crate) listeners: Vec<RawFd>,
    pub(crate) from_master: RawFd,
    pub(crate) to_master: RawFd,
    pub(crate) access_log: Option<RawFd>,
    /// Whether connections are direct descriptors (the master's decision, from its probe).
    pub(crate) direct: bool,
}

impl Handed {
    /// The descriptors handed over: the listening sockets, both pipes, the access log.
    fn descriptors(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.listeners
            .iter()
            .copied()
            .chain([self.from_master, self.to_master])
            .chain(self.access_log)
    }

    fn encode(&self) -> String {
        let list = |fds: &[RawFd]| {
            fds.iter()
                .map(|fd| fd.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "slot={};cpu={};master={};queue={};listeners={};from={};to={};log={};direct={}",
            self.slot,
            self.cpu.map_or("-".to_string(), |c| c.to_string()),
            self.master,
            self.accept_queue,
            list(&self.listeners),
            self.from_master,
            self.to_master,
            self.access_log.map_or("-".to_string(), |fd| fd.to_string()),
            u8::from(self.direct),
        )
    }

    fn decode(text: &str) -> Option<Handed> {
        let mut fields = std::collections::HashMap::new();
        for part in text.split(';') {
            let (k, v) = part.split_once('=')?;
            fields.insert(k, v);
        }
        let num = |k: &str| fields.get(k)?.parse::<i64>().ok();
        let fd = |k: &str| {
            num(k)
                .and_then(|n| RawFd::try_from(n).ok())
                .filter(|&n| n >= 0)
        };
        let listeners = fields
            .get("listeners")?
            .split(',')
            .map(|s| s.parse::<RawFd>().ok().filter(|&n| n >= 0))
            .collect::<Option<Vec<_>>>()?;
        Some(Handed {
            slot: u32::try_from(num("slot")?).ok()?,
            cpu: match *fields.get("cpu")? {
                "-" => None,
                _ => Some(usize::try_from(num("cpu")?).ok()?),
            },
            master: i32::try_from(num("master")?).ok()?,
            accept_queue: u32::try_from(num("queue")?).ok()?,
            listeners,
            from_master: fd("from")?,
            to_master: fd("to")?,
            access_log: match *fields.get("log")? {
                "-" => None,
                _ => Some(fd("log")?),
            },
            direct: num("direct")? == 1,
        })
    }
}

/// In the forked child: executes the binary `exe` as the worker `handed` describes. Its
/// descriptors survive the exec (their close-on-exec flag is cleared); everything else the
/// child holds was closed already. Returns only on failure, with the exit code to use.
pub(super) fn exec_worker(exe: RawFd, handed: &Handed, config: Option<&str>) -> i32 {
    for fd in handed.descriptors() {
        if let Err(e) = set_cloexec(fd, false) {
            log!("exec: keeping descriptor {fd}: {e}");
            return 127;
        }
    }
    let to_c = |s: &OsString| CString::new(s.as_bytes()).ok();
    let Some(argv) = std::env::args_os()
        .map(|a| to_c(&a))
        .collect::<Option<Vec<_>>>()
    else {
        log!("exec: an argument holds a NUL byte");
        return 127;
    };
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != WORKER_ENV && k != CONFIG_ENV)
        .filter_map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            to_c(&kv)
        })
        .collect();
    envp.push(CString::new(format!("{WORKER_ENV}={}", handed.encode())).expect("no NUL"));
    if let Some(text) = config {
        let Ok(var) = CString::new(format!("{CONFIG_ENV}={text}")) else {
            log!("exec: the configuration file holds a NUL byte");
            return 127;
        };
        envp.push(var);
    }
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp_ptrs: Vec<*const libc::c_char> = envp
        .iter()
        .map(|e| e.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    // SAFETY: `exe` is an open O_PATH descriptor of the binary; the path is empty with
    // AT_EMPTY_PATH, so the descriptor itself is executed; both arrays are NUL-terminated
    // arrays of pointers to NUL-terminated strings that live across the call. execveat
    // returns only on failure.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            exe,
            c"".as_ptr(),
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    log!(
        "exec: running the binary for a new worker: {}",
        std::io::Error::last_os_error()
    );
    127
}

fn set_cloexec(fd: RawFd, on: bool) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    // SAFETY: `fd` is one of this process's open descriptors, named by the caller.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(borrowed, FcntlArg::F_SETFD(flags)).map(drop)
}

/// In a process started as a worker (its environment has [`WORKER_ENV`]): runs the worker
/// with this image's handler and configuration, and exits. `None` when the environment
/// does not say so, and the caller goes on as a master.
pub(crate) fn worker_main<H: crate::Serve>(config: &Config, handler: &H) -> Option<Error> {
    let text = std::env::var(WORKER_ENV).ok()?;
    // Processes the worker's handler starts are no workers.
    std::env::remove_var(WORKER_ENV);
    let Some(handed) = Handed::decode(&text) else {
        return Some(Error::new(
            crate::error::ErrorKind::Config,
            format!("{WORKER_ENV}={text:?} is not what a master hands a worker; unset it"),
        ));
    };
    crate::log::set_format(config.log_format);
    for fd in handed.descriptors() {
        // Not passed on to whatever the handler executes.
        let _ = set_cloexec(fd, true);
    }
    let config = Config {
        uring: crate::config::UringOptions {
            direct_descriptors: handed.direct,
            ..config.uring
        },
        ..config.clone()
    };
    // SAFETY: the master handed these descriptors to this process alone, open, for the
    // worker to own (each is named once).
    let own = |fd: RawFd| unsafe { OwnedFd::from_raw_fd(fd) };
    let setup = worker::Setup {
        slot: handed.slot,
        cpu: handed.cpu,
        listeners: handed.listeners.clone(),
        from_master: own(handed.from_master),
        to_master: own(handed.to_master),
        accept_queue: handed.accept_queue,
        access_log: handed.access_log.map(own),
    };
    let master = nix::unistd::Pid::from_raw(handed.master);
    let code = super::fork::child_main(&config, handler, handed.cpu, master, setup);
    std::process::exit(code);
}

/// In a worker, or a process started as one (its environment has [`WORKER_ENV`]) that
/// fails before it runs the worker (its command line or configuration file is refused):
/// tells the master why it cannot start ([`Message::Failed`](crate::ipc::Message::Failed)),
/// for a failed reload's answer. Does nothing anywhere else.
pub(crate) fn tell_master_failed(why: &str) {
    let fd = crate::ipc::to_master().or_else(|| {
        let text = std::env::var(WORKER_ENV).ok()?;
        Some(Handed::decode(&text)?.to_master)
    });
    if let Some(fd) = fd {
        // SAFETY: the master handed this descriptor (the pipe to it) to this process, which
        // has not closed it: borrowed for one write.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        // Best effort on the way out: a master that cannot be told still sees the exit.
        let _ = crate::ipc::write_frame(fd, &crate::ipc::Message::failed(why));
    }
}

/// What `handed` would be for the descriptors of `setup`.
pub(super) fn handed(setup: &worker::Setup, master: i32, direct: bool) -> Handed {
    Handed {
        slot: setup.slot,
        cpu: setup.cpu,
        master,
        accept_queue: setup.accept_queue,
        listeners: setup.listeners.clone(),
        from_master: setup.from_master.as_raw_fd(),
        to_master: setup.to_master.as_raw_fd(),
        access_log: setup.access_log.as_ref().map(|f| f.as_raw_fd()),
        direct,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_handed_reads_back_and_bad_text_is_refused() {
        let h = Handed {
            slot: 3,
            cpu: Some(1),
            master: 4242,
            accept_queue: 4096,
            listeners: vec![3, 4],
            from_master: 7,
            to_master: 8,
            access_log: Some(9),
            direct: true,
        };
        assert_eq!(Handed::decode(&h.encode()), Some(h));
        let none = Handed {
            access_log: None,
            direct: false,
            ..Handed::decode("slot=0;cpu=0;master=1;queue=1;listeners=3;from=4;to=5;log=-;direct=0")
                .unwrap()
        };
        assert_eq!(none.access_log, None);
        let unpinned = Handed { cpu: None, ..none };
        assert_eq!(Handed::decode(&unpinned.encode()), Some(unpinned));
        for bad in [
            "",
            "slot=0",
            "slot=x;cpu=0;master=1;queue=1;listeners=3;from=4;to=5;log=-;direct=0",
            "slot=0;cpu=0;master=1;queue=1;listeners=-3;from=4;to=5;log=-;direct=0",
        ] {
            assert_eq!(Handed::decode(bad), None, "{bad}");
        }
    }
}
