//! The control socket: a Unix stream socket (mode 0600) served by the master, through which
//! `ringmaster status`, `reload`, `reopen`, `scale` and `stop` reach a running server. A request
//! is one line naming the command; the answer is text, then the master closes the connection.
//! Served by the master's own bounded inbox ([`crate::inbox`], which says why by hand).
//!
//! # Nobody else's socket
//!
//! A control socket another user can put in place of the master's would let them keep the
//! master from starting and receive root's `stop` (and answer it `ok`). So:
//!
//! - the default path ([`Config::control_path`](crate::Config::control_path)) lies in a
//!   directory of its own (`$XDG_RUNTIME_DIR/ringmaster/`, `/run/ringmaster/` for root,
//!   `/tmp/ringmaster-UID/` otherwise) that the master creates with mode 0700; the master
//!   and the commands both refuse it unless it is a real directory (not a symlink), owned
//!   by their uid and closed to group and others;
//! - both ends check the other's uid with `SO_PEERCRED`: the master serves only clients of
//!   its own uid or root (others get one `error: permission denied` line, and their command
//!   is not run), and a command talks only to a master of its own uid or root (otherwise it
//!   sends nothing and says which uid holds the socket);
//! - a socket file nobody answers on is removed only if it is a socket owned by this uid.
//!
//! An explicit `--control PATH` is where the user chose: its directory is not checked, but
//! both peer checks and the stale-file check apply.

use crate::error::{Error, ErrorKind};
use crate::inbox::{Framing, Inbox, Listener};
use crate::log::{log, log_limited};
use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::stat::Mode;
use nix::unistd::{geteuid, Uid};
use std::fs::Metadata;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest request line; longer requests are refused.
const LINE_BYTES_MAX: usize = 256;
/// The mode of the default path's directory: owner only.
const DIR_MODE: u32 = 0o700;

/// A command from a control client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// One line per worker, and the totals.
    Status,
    /// Same as `status`, as JSON.
    StatusJson,
    /// A rolling reload; answered when it is over.
    Reload,
    /// Reopen the access log in the master and every worker (as `SIGUSR1`); answered when
    /// every worker switched, or failed to.
    Reopen,
    /// A graceful shutdown.
    Stop,
    /// Run `workers` workers (`scale N`), more than one per CPU only if `oversubscribe`
    /// (`scale N oversubscribe`); a scale up is answered once its new workers are ready.
    Scale { workers: u32, oversubscribe: bool },
}

impl Command {
    fn parse(line: &str) -> Option<Command> {
        match line.trim() {
            "status" => Some(Command::Status),
            "status json" => Some(Command::StatusJson),
            "reload" => Some(Command::Reload),
            "reopen" => Some(Command::Reopen),
            "stop" => Some(Command::Stop),
            other => {
                let mut words = other.strip_prefix("scale ")?.split(' ');
                let workers = words.next()?.parse().ok()?;
                let oversubscribe = match words.next() {
                    None => false,
                    Some("oversubscribe") => true,
                    Some(_) => return None,
                };
                match words.next() {
                    None => Some(Command::Scale {
                        workers,
                        oversubscribe,
                    }),
                    Some(_) => None,
                }
            }
        }
    }
}

/// Where a control socket's path came from, which decides whether its directory is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PathOrigin {
    /// [`Config::control_path`](crate::Config::control_path)'s default: its directory is
    /// ringmaster's, created private by the master and checked by both ends.
    Default,
    /// `--control PATH`: the user chose where, and secures its directory.
    Chosen,
}

impl PathOrigin {
    /// The origin of the path a configuration with `control` set (or not) uses.
    pub(crate) fn of(control: Option<&Path>) -> PathOrigin {
        match control {
            Some(_) => PathOrigin::Chosen,
            None => PathOrigin::Default,
        }
    }
}

/// Whether a peer of uid `peer` may be talked to by a process of uid `own`: only itself
/// and root.
fn trusted(peer: Uid, own: Uid) -> bool {
    peer == own || peer.is_root()
}

/// The uid of the process at the other end of a Unix stream socket (for a client: the one
/// that listened; for the master: the one that connected).
fn peer_uid(stream: &impl AsFd) -> io::Result<Uid> {
    let cred = getsockopt(stream, sockopt::PeerCredentials)?;
    Ok(Uid::from_raw(cred.uid()))
}

/// What a file is, as far as these checks care (from `lstat`: a symlink is not followed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileKind {
    Directory,
    Socket,
    Symlink,
    Other,
}

/// The facts about a file that the checks decide on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileFacts {
    kind: FileKind,
    owner: Uid,
    mode: u32,
}

impl FileFacts {
    fn of(meta: &Metadata) -> FileFacts {
        let t = meta.file_type();
        let kind = if t.is_symlink() {
            FileKind::Symlink
        } else if t.is_dir() {
            FileKind::Directory
        } else if t.is_socket() {
            FileKind::Socket
        } else {
            FileKind::Other
        };
        FileFacts {
            kind,
            owner: Uid::from_raw(meta.uid()),
            mode: meta.mode() & 0o7777,
        }
    }
}

/// Why a directory cannot hold this uid's control socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DirProblem {
    Symlink,
    NotADirectory,
    Owner(Uid),
    Open(u32),
}

/// Whether `dir` is fit for uid `own`'s control socket: a directory (not a symlink to one)
/// that `own` owns and nobody else may enter.
fn dir_problem(dir: FileFacts, own: Uid) -> Option<DirProblem> {
    match dir.kind {
        FileKind::Symlink => Some(DirProblem::Symlink),
        FileKind::Socket | FileKind::Other => Some(DirProblem::NotADirectory),
        FileKind::Directory if dir.owner != own => Some(DirProblem::Owner(dir.owner)),
        FileKind::Directory if dir.mode & 0o077 != 0 => Some(DirProblem::Open(dir.mode)),
        FileKind::Directory => None,
    }
}

/// Why a socket file nobody answers on may not be removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StaleProblem {
    NotASocket,
    Owner(Uid),
}

/// Whether a file nobody answers on is a socket a dead master of uid `own` left.
fn stale_problem(file: FileFacts, own: Uid) -> Option<StaleProblem> {
    match file.kind {
        FileKind::Socket if file.owner == own => None,
        FileKind::Socket => Some(StaleProblem::Owner(file.owner)),
        _ => Some(StaleProblem::NotASocket),
    }
}

/// The directory of a default control path.
fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

/// Refuses a directory of the default path that is not private to this uid; a missing one
/// passes (the master creates it; a command then finds no socket in it).
fn check_dir(dir: &Path) -> Result<(), Error> {
    let own = geteuid();
    let meta = match dir.symlink_metadata() {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::system(&format!("lstat {}", dir.display()), e)),
    };
    let Some(problem) = dir_problem(FileFacts::of(&meta), own) else {
        return Ok(());
    };
    let d = dir.display();
    let why = match problem {
        DirProblem::Symlink => format!("the control socket directory {d} is a symbolic link"),
        DirProblem::NotADirectory => format!("the control socket directory {d} is not a directory"),
        DirProblem::Owner(owner) => format!(
            "the control socket directory {d} belongs to uid {owner}, not to this user \
             (uid {own})"
        ),
        DirProblem::Open(mode) => {
            format!("the control socket directory {d} is open to other users (mode {mode:04o})")
        }
    };
    let remedy = match problem {
        DirProblem::Open(_) => format!("run `chmod 700 {d}`"),
        _ => format!("remove it (ringmaster creates it, mode 0700, owned by uid {own})"),
    };
    Err(Error::new(
        ErrorKind::Untrusted,
        format!("{why}; {remedy}, or pass --control PATH"),
    ))
}

/// Creates the default path's directory private (mode 0700) if it is missing, then checks it.
fn prepare_dir(dir: &Path) -> Result<(), Error> {
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => log!("created the control socket directory {}", dir.display()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Error::new(
                ErrorKind::Bind,
                format!(
                    "creating the control socket directory {} failed: {e}; create it (mode \
                     0700) or pass --control with a writable path",
                    dir.display()
                ),
            ))
        }
    }
    check_dir(dir)
}

/// The master's control socket, which accepts only clients of its own uid or root.
struct ControlListener {
    listener: UnixListener,
    uid: Uid,
}

impl AsFd for ControlListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

impl Listener for ControlListener {
    type Stream = UnixStream;

    fn accept_one(&self) -> io::Result<UnixStream> {
        let (s, _) = self.listener.accept()?;
        s.set_nonblocking(true)?;
        Ok(s)
    }

    fn vet(&self, stream: &UnixStream) -> Result<(), String> {
        let peer = peer_uid(stream);
        if peer.as_ref().is_ok_and(|&peer| trusted(peer, self.uid)) {
            return Ok(());
        }
        let who = match peer {
            Ok(uid) => format!("uid {uid}"),
            Err(e) => format!("a peer of unknown uid ({e})"),
        };
        log_limited!(
            "control: refused a client of {who}: only uid {} and root may command this master",
            self.uid
        );
        Err(format!(
            "error: permission denied: this master (uid {}) takes commands from its own uid \
             and root only, not {who}; run the command as one of them\n",
            self.uid
        ))
    }
}

/// The master's control socket and its clients.
pub(crate) struct ControlServer {
    inbox: Inbox<ControlListener>,
    path: PathBuf,
}

impl ControlServer {
    /// Refuses to go on when a live master answers on `path`: another ringmaster serves
    /// this port (with `SO_REUSEPORT` the port itself would not say so). A listener of
    /// another uid there is named as such.
    pub(crate) fn check_free(path: &Path) -> Result<(), Error> {
        let Ok(stream) = UnixStream::connect(path) else {
            return Ok(());
        };
        let own = geteuid();
        match peer_uid(&stream) {
            Ok(peer) if !trusted(peer, own) => Err(Error::new(
                ErrorKind::Untrusted,
                format!(
                    "the control socket {} is held by uid {peer}, another user; stop that \
                     process and remove the file, or pass --control with a path of your own",
                    path.display()
                ),
            )),
            _ => Err(Error::new(
                ErrorKind::AddressInUse,
                format!(
                    "another {program} is already running with control socket {}; stop it \
                     (`{program} stop --control {0}`) or use another port",
                    path.display(),
                    program = crate::log::program()
                ),
            )),
        }
    }

    /// Binds `path`, creating and checking its directory first when it is the default
    /// one. A socket file left by a dead master of this uid is replaced; one a live master
    /// answers on means another ringmaster serves this port, which is refused, and so is
    /// any other file there.
    pub(crate) fn bind(path: &Path, origin: PathOrigin) -> Result<ControlServer, Error> {
        if origin == PathOrigin::Default {
            prepare_dir(parent(path))?;
        }
        if let Ok(meta) = path.symlink_metadata() {
            ControlServer::check_free(path)?;
            // Nobody answers: a master died without cleaning up, or the file is not ours.
            remove_stale(path, &meta)?;
        }
        // Create the socket owner-only from the start: no window with looser permissions.
        // The master is single-threaded, so no other thread creates files meanwhile.
        let old = nix::sys::stat::umask(Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let listener = bound.map_err(|e| {
            Error::new(
                ErrorKind::Bind,
                format!(
                    "binding the control socket {} failed: {e}; pass --control with a \
                     writable path",
                    path.display()
                ),
            )
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::system("control socket", e))?;
        let framing = Framing {
            terminator: b"\n",
            bytes_max: LINE_BYTES_MAX,
            too_long: b"error: request line too long\n",
            busy: b"error: busy, too many control connections\n",
        };
        let listener = ControlListener {
            listener,
            uid: geteuid(),
        };
        Ok(ControlServer {
            inbox: Inbox::new(listener, framing),
            path: path.to_path_buf(),
        })
    }

    /// The descriptors to poll.
    pub(crate) fn poll_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.inbox.poll_fds()
    }

    /// Every descriptor it owns (for a forked child to close).
    pub(crate) fn descriptors(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.inbox.descriptors()
    }

    /// Accepts, reads, and returns the commands that arrived with their connection ids;
    /// unknown commands are answered here.
    pub(crate) fn poll(&mut self, out: &mut Vec<(u64, Command)>) {
        let mut requests = Vec::new();
        self.inbox.poll(&mut requests);
        for (id, line) in requests {
            match Command::parse(&String::from_utf8_lossy(&line)) {
                Some(command) => out.push((id, command)),
                None => self.inbox.answer(
                    id,
                    b"error: unknown command; use status, status json, reload, reopen, scale N or stop\n",
                ),
            }
        }
    }

    /// The earliest instant a client times out, if any client is waiting to send.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.inbox.next_deadline()
    }

    /// Answers connection `id` with `text` and closes it.
    pub(crate) fn answer(&mut self, id: u64, text: &str) {
        self.inbox.answer(id, text.as_bytes());
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes a file nobody answers on, if it is a socket this uid owns (a dead master's).
fn remove_stale(path: &Path, meta: &Metadata) -> Result<(), Error> {
    let own = geteuid();
    let p = path.display();
    let why = match stale_problem(FileFacts::of(meta), own) {
        None => {
            std::fs::remove_file(path)
                .map_err(|e| Error::system(&format!("removing stale {p}"), e))?;
            log!("removed stale control socket {p}");
            return Ok(());
        }
        Some(StaleProblem::NotASocket) => format!("{p} exists and is not a socket"),
        Some(StaleProblem::Owner(owner)) => format!(
            "{p} is a socket nobody answers on, owned by uid {owner}, not by this user \
             (uid {own})"
        ),
    };
    Err(Error::new(
        ErrorKind::Untrusted,
        format!("{why}; remove it yourself if it is stale, or pass --control with another path"),
    ))
}

/// Why a command did not get an answer.
#[derive(Debug)]
pub(crate) enum RequestError {
    /// Nothing answered on the path (no file, nobody listening, no answer in time): most
    /// likely no master runs there.
    Unreachable(io::Error),
    /// The socket or its directory belongs to someone else; nothing was sent.
    Untrusted(Error),
}

/// Sends `command` to the master listening on `path` and returns its answer, after
/// checking the default path's directory and that the listener is this uid's or root's.
pub(crate) fn request(
    path: &Path,
    origin: PathOrigin,
    command: &str,
    timeout: Duration,
) -> Result<String, RequestError> {
    if origin == PathOrigin::Default {
        check_dir(parent(path)).map_err(RequestError::Untrusted)?;
    }
    let mut stream = UnixStream::connect(path).map_err(RequestError::Unreachable)?;
    let own = geteuid();
    let peer = peer_uid(&stream).map_err(RequestError::Unreachable)?;
    if !trusted(peer, own) {
        return Err(RequestError::Untrusted(Error::new(
            ErrorKind::Untrusted,
            format!(
                "the control socket {} is served by uid {peer}, neither this user (uid {own}) \
                 nor root, so `{command}` was not sent: another user may stand in for the \
                 master; stop that process and remove the file, or pass --control with your \
                 master's socket",
                path.display()
            ),
        )));
    }
    stream
        .set_read_timeout(Some(timeout))
        .map_err(RequestError::Unreachable)?;
    let sent = stream.write_all(format!("{command}\n").as_bytes());
    let mut answer = String::new();
    let read = stream.read_to_string(&mut answer);
    // A master that refuses a client answers and hangs up, perhaps before the command
    // arrived (the write then fails) or before reading it (the read then ends in a reset):
    // what it said is the answer all the same.
    let hung_up = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        )
    };
    match read.err().or(sent.err()) {
        None => Ok(answer),
        Some(e) if hung_up(&e) && !answer.is_empty() => Ok(answer),
        Some(e) => Err(RequestError::Unreachable(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Uid = Uid::from_raw(1000);
    const OTHER: Uid = Uid::from_raw(1001);
    const ROOT: Uid = Uid::from_raw(0);

    fn facts(kind: FileKind, owner: Uid, mode: u32) -> FileFacts {
        FileFacts { kind, owner, mode }
    }

    #[test]
    fn scale_takes_a_count_and_an_optional_oversubscribe() {
        let scale = |workers, oversubscribe| {
            Some(Command::Scale {
                workers,
                oversubscribe,
            })
        };
        assert_eq!(Command::parse("scale 3\n"), scale(3, false));
        assert_eq!(Command::parse("scale 9 oversubscribe"), scale(9, true));
        for bad in [
            "scale",
            "scale ",
            "scale -1",
            "scale x",
            "scale 3 more",
            "scale 3 oversubscribe x",
        ] {
            assert_eq!(Command::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_the_same_uid_and_root_are_trusted() {
        assert!(trusted(ME, ME));
        assert!(trusted(ROOT, ME));
        assert!(!trusted(OTHER, ME));
        assert!(trusted(ROOT, ROOT));
        assert!(!trusted(ME, ROOT));
    }

    #[test]
    fn a_directory_must_be_a_private_one_of_this_uid() {
        use FileKind::*;
        let cases = [
            (facts(Directory, ME, 0o700), None),
            (facts(Directory, ME, 0o500), None),
            (facts(Directory, ME, 0o710), Some(DirProblem::Open(0o710))),
            (facts(Directory, ME, 0o701), Some(DirProblem::Open(0o701))),
            (facts(Directory, ME, 0o1777), Some(DirProblem::Open(0o1777))),
            (
                facts(Directory, OTHER, 0o700),
                Some(DirProblem::Owner(OTHER)),
            ),
            (facts(Directory, ROOT, 0o700), Some(DirProblem::Owner(ROOT))),
            (facts(Symlink, ME, 0o777), Some(DirProblem::Symlink)),
            (facts(Socket, ME, 0o700), Some(DirProblem::NotADirectory)),
            (facts(Other, ME, 0o700), Some(DirProblem::NotADirectory)),
        ];
        for (dir, want) in cases {
            assert_eq!(dir_problem(dir, ME), want, "{dir:?}");
        }
    }

    #[test]
    fn only_a_socket_of_this_uid_is_removed_as_stale() {
        use FileKind::*;
        assert_eq!(stale_problem(facts(Socket, ME, 0o600), ME), None);
        assert_eq!(
            stale_problem(facts(Socket, OTHER, 0o600), ME),
            Some(StaleProblem::Owner(OTHER))
        );
        assert_eq!(
            stale_problem(facts(Socket, ROOT, 0o600), ME),
            Some(StaleProblem::Owner(ROOT))
        );
        for kind in [Directory, Symlink, Other] {
            assert_eq!(
                stale_problem(facts(kind, ME, 0o600), ME),
                Some(StaleProblem::NotASocket),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn the_file_facts_come_from_lstat() {
        let dir = std::env::temp_dir().join(format!("rm-control-facts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let sock = dir.join("s.sock");
        let _listener = UnixListener::bind(&sock).unwrap();
        let of = |p: &Path| FileFacts::of(&p.symlink_metadata().unwrap());
        assert_eq!(of(&dir).kind, FileKind::Directory);
        assert_eq!(of(&dir).mode, 0o700);
        assert_eq!(of(&dir).owner, geteuid());
        assert_eq!(of(&link).kind, FileKind::Symlink);
        assert_eq!(of(&sock).kind, FileKind::Socket);
        assert!(check_dir(&dir).is_ok());
        let err = check_dir(&link).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Untrusted);
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let err = check_dir(&dir).unwrap_err();
        assert!(err.to_string().contains("(mode 0755)"), "{err}");
        assert!(err.to_string().contains("chmod 700"), "{err}");
        assert!(check_dir(&dir.join("missing")).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_client_of_this_uid_is_served() {
        let dir = std::env::temp_dir().join(format!("rm-control-serve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("ringmaster-1.sock");
        let mut server = ControlServer::bind(&path, PathOrigin::Default).unwrap();
        let meta = dir.symlink_metadata().unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700, "created private");
        let client = std::thread::spawn({
            let path = path.clone();
            move || request(&path, PathOrigin::Default, "status", Duration::from_secs(5))
        });
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.is_empty() {
            assert!(Instant::now() < deadline, "no command arrived");
            let mut fds: Vec<_> = server
                .poll_fds()
                .map(|fd| nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN))
                .collect();
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
            drop(fds);
            server.poll(&mut got);
        }
        assert_eq!(got[0].1, Command::Status);
        server.answer(got[0].0, "ok\n");
        assert_eq!(client.join().unwrap().unwrap(), "ok\n");
        drop(server);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
