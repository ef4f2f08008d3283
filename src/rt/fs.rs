//! Files for handler code, through the worker's ring: open (`IORING_OP_OPENAT2`, inside a
//! root with `RESOLVE_BENEATH` where asked), metadata (`IORING_OP_STATX`) and reads at an
//! offset (`IORING_OP_READ`). Nothing here blocks the worker on the disk: the kernel runs
//! what cannot complete at once on its own workers and the ring reports the end.
//!
//! Read-only: a server's files are its content. A [`Dir`] is a root a request's path can
//! be resolved beneath: `..`, absolute paths and symbolic links that lead out of it are
//! refused by the kernel (`EXDEV`), whatever the path says.
//!
//! ```
//! use ringmaster::rt::fs::Dir;
//! use ringmaster::{OwnedRequest, Response};
//! use std::io::{self, ErrorKind};
//!
//! // Answers with a file from beneath /srv/www, if it is a regular file of at most 1 MiB.
//! async fn serve(req: OwnedRequest) -> Response {
//!     let read = async {
//!         let root = Dir::open("/srv/www").await?;
//!         let file = root.open_file(req.path().trim_start_matches('/')).await?;
//!         let meta = file.metadata().await?;
//!         if !meta.is_file() || meta.len > 1 << 20 {
//!             return Err(io::Error::from(ErrorKind::PermissionDenied));
//!         }
//!         let mut bytes = vec![0u8; meta.len as usize];
//!         let n = file.read_exact_at(&mut bytes, 0).await?;
//!         bytes.truncate(n);
//!         Ok(bytes)
//!     };
//!     let mut res = Response::new();
//!     match read.await {
//!         Ok(bytes) => res.body(bytes),
//!         Err(e) if e.kind() == ErrorKind::NotFound => res.status(404),
//!         // `..` or a link leading out of the root is refused by the kernel (`EXDEV`).
//!         Err(e) if e.kind() == ErrorKind::CrossesDevices => res.status(403),
//!         Err(e) if e.kind() == ErrorKind::PermissionDenied => res.status(403),
//!         Err(_) => res.status(500),
//!     };
//!     res
//! }
//! ```
//!
//! To send a large file without reading it into memory, see
//! [`BodyWriter::send_file`](crate::BodyWriter::send_file).

use super::op::RingOp;
use ringmaster_uring::{Op, OpenArgs, Owned, StatxArgs};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The most bytes one [`File::read_at`] reads (a larger buffer is filled in part).
///
/// See [`File::read_at`]'s example, which reads until the end of the file.
pub const READ_BYTES_MAX: usize = 1 << 20;

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

fn result(res: i32) -> io::Result<u32> {
    match res {
        r if r >= 0 => Ok(r as u32),
        r => Err(io::Error::from_raw_os_error(-r)),
    }
}

/// `openat2(dirfd, path, flags, resolve)` on the ring.
async fn open_at(dirfd: RawFd, path: &Path, flags: i32, resolve: u64) -> io::Result<OwnedFd> {
    let open = Box::new(OpenArgs {
        path: c_path(path)?,
        how: io_uring::types::OpenHow::new()
            .flags((flags | libc::O_CLOEXEC) as u64)
            .resolve(resolve),
    });
    let fd = result(RingOp::new(Op::OpenAt2 { dirfd, open }).await.result)?;
    // SAFETY: the kernel just gave this descriptor to this process; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `statx(dirfd, path, flags)` on the ring.
async fn stat_at(dirfd: RawFd, path: &Path, flags: i32) -> io::Result<Metadata> {
    let stat = Box::new(StatxArgs {
        path: c_path(path)?,
        flags: flags | libc::AT_STATX_SYNC_AS_STAT,
        mask: libc::STATX_TYPE
            | libc::STATX_MODE
            | libc::STATX_SIZE
            | libc::STATX_MTIME
            | libc::STATX_INO,
        // SAFETY: `statx` is plain data for which all zeroes is valid.
        buf: unsafe { std::mem::zeroed() },
    });
    let outcome = RingOp::new(Op::Statx { dirfd, stat }).await;
    result(outcome.result)?;
    let Owned::Statx(stat) = outcome.owned else {
        unreachable!("a statx hands its buffer back")
    };
    Ok(Metadata::from(&stat.buf))
}

/// What [`metadata`], [`File::metadata`] and [`Dir::metadata`] tell of a file.
///
/// See the [`fs`](crate::rt::fs) module's example.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// Size in bytes.
    pub len: u64,
    /// The file type and permission bits (`st_mode`).
    pub mode: u32,
    /// Last modification.
    pub modified: SystemTime,
    /// The inode number and the device it is on: with `modified` and `len`, which version
    /// of which file this is (a file replaced by a rename has another inode).
    pub ino: u64,
    /// The device (`makedev(major, minor)`).
    pub dev: u64,
}

impl Metadata {
    fn from(s: &libc::statx) -> Metadata {
        let since = Duration::new(
            u64::try_from(s.stx_mtime.tv_sec).unwrap_or(0),
            s.stx_mtime.tv_nsec,
        );
        Metadata {
            len: s.stx_size,
            mode: u32::from(s.stx_mode),
            modified: SystemTime::UNIX_EPOCH + since,
            ino: s.stx_ino,
            dev: (u64::from(s.stx_dev_major) << 32) | u64::from(s.stx_dev_minor),
        }
    }

    /// A regular file.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::fs::Metadata;
    /// use std::time::SystemTime;
    ///
    /// let page = Metadata {
    ///     len: 512,
    ///     mode: 0o100644, // a regular file, rw-r--r--
    ///     modified: SystemTime::UNIX_EPOCH,
    ///     ino: 7,
    ///     dev: 0,
    /// };
    /// assert!(page.is_file());
    /// let dir = Metadata { mode: 0o040755, ..page };
    /// assert!(!dir.is_file());
    /// ```
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// A directory.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::fs::Metadata;
    /// use std::time::SystemTime;
    ///
    /// let dir = Metadata {
    ///     len: 4096,
    ///     mode: 0o040755, // a directory, rwxr-xr-x
    ///     modified: SystemTime::UNIX_EPOCH,
    ///     ino: 2,
    ///     dev: 0,
    /// };
    /// assert!(dir.is_dir());
    /// let fifo = Metadata { mode: 0o010644, ..dir }; // a named pipe
    /// assert!(!fifo.is_dir() && !fifo.is_file());
    /// ```
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// The metadata of the file at `path` (symbolic links followed).
///
/// # Examples
///
/// ```
/// use ringmaster::rt::fs;
/// use std::io;
/// use std::time::SystemTime;
///
/// // When the configuration file last changed, to know whether to load it again.
/// async fn config_changed() -> io::Result<SystemTime> {
///     Ok(fs::metadata("/etc/myapp/config.toml").await?.modified)
/// }
/// ```
pub async fn metadata(path: impl AsRef<Path>) -> io::Result<Metadata> {
    stat_at(libc::AT_FDCWD, path.as_ref(), 0).await
}

/// A file open for reading, through the worker's ring.
///
/// See the [`fs`](crate::rt::fs) module's example.
#[derive(Debug)]
pub struct File {
    fd: OwnedFd,
}

impl File {
    /// Opens `path` for reading.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::fs::File;
    /// use std::io;
    ///
    /// // Whether a file is a PNG, from its first eight bytes.
    /// async fn is_png(path: &str) -> io::Result<bool> {
    ///     let file = File::open(path).await?;
    ///     let mut magic = [0u8; 8];
    ///     let n = file.read_exact_at(&mut magic, 0).await?;
    ///     Ok(n == 8 && magic == *b"\x89PNG\r\n\x1a\n")
    /// }
    /// ```
    pub async fn open(path: impl AsRef<Path>) -> io::Result<File> {
        let fd = open_at(libc::AT_FDCWD, path.as_ref(), libc::O_RDONLY, 0).await?;
        Ok(File { fd })
    }

    /// Its metadata.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::fs::File;
    /// use std::io;
    ///
    /// // Reads a small file whole, refusing one over 64 KiB before reading anything.
    /// async fn read_small(file: &File) -> io::Result<Vec<u8>> {
    ///     let len = file.metadata().await?.len;
    ///     if len > 64 * 1024 {
    ///         return Err(io::Error::new(io::ErrorKind::InvalidData, "over 64 KiB"));
    ///     }
    ///     let mut buf = vec![0u8; len as usize];
    ///     let n = file.read_exact_at(&mut buf, 0).await?;
    ///     buf.truncate(n);
    ///     Ok(buf)
    /// }
    /// ```
    pub async fn metadata(&self) -> io::Result<Metadata> {
        stat_at(self.fd.as_raw_fd(), Path::new(""), libc::AT_EMPTY_PATH).await
    }

    /// Reads at most `buf.len()` (and [`READ_BYTES_MAX`]) bytes at `offset`; `Ok(0)` at
    /// the end of the file.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::fs::File;
    /// use std::io;
    ///
    /// // Counts the lines of a file, 64 KiB at a time.
    /// async fn count_lines(file: &File) -> io::Result<usize> {
    ///     let mut buf = vec![0u8; 64 * 1024];
    ///     let (mut offset, mut lines) = (0, 0);
    ///     loop {
    ///         match file.read_at(&mut buf, offset).await? {
    ///             0 => return Ok(lines),
    ///             n => {
    ///                 lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
    ///                 offset += n as u64;
    ///             }
    ///         }
    ///     }
    /// }
    /// ```
    pub async fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let len = buf.len().min(READ_BYTES_MAX);
        if len == 0 {
            return Ok(0);
        }
        let op = Op::ReadAt {
            fd: self.fd.as_raw_fd(),
            buf: Vec::with_capacity(len),
            offset,
        };
        let outcome = RingOp::new(op).await;
        let n = result(outcome.result)? as usize;
        let Owned::Buf(got) = outcome.owned else {
            unreachable!("a read hands its buffer back")
        };
        let n = n.min(len);
        buf[..n].copy_from_slice(&got[..n]);
        Ok(n)
    }

    /// Reads at most `max` bytes at `offset` into `buf` after what it holds, and hands `buf`
    /// back grown by what was read (not at all at the end of the file), with the count or
    /// the error. The kernel reads into `buf` itself: no copy, and no allocation when `buf`
    /// is reused with room for `max`.
    ///
    /// A `max` of 0 reads nothing: `Ok(0)`, `buf` as it was.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::fs::File;
    /// use std::io;
    ///
    /// // The last bytes of a log file (at most 64 KiB), read straight into the vector returned.
    /// async fn tail(file: &File) -> io::Result<Vec<u8>> {
    ///     let len = file.metadata().await?.len;
    ///     let n = len.min(64 * 1024);
    ///     if n == 0 {
    ///         return Ok(Vec::new());
    ///     }
    ///     let (read, buf) = file.read_at_vec(Vec::new(), len - n, n as usize).await;
    ///     read?;
    ///     Ok(buf)
    /// }
    /// ```
    pub async fn read_at_vec(
        &self,
        buf: Vec<u8>,
        offset: u64,
        max: usize,
    ) -> (io::Result<usize>, Vec<u8>) {
        if max == 0 {
            // A read of nothing, as `read` with an empty buffer: nothing to ask the ring.
            return (Ok(0), buf);
        }
        let buf = super::room_for(buf, max.min(READ_BYTES_MAX));
        let op = Op::ReadAt {
            fd: self.fd.as_raw_fd(),
            buf,
            offset,
        };
        let outcome = RingOp::new(op).await;
        let Owned::Buf(buf) = outcome.owned else {
            unreachable!("a read hands its buffer back")
        };
        (result(outcome.result).map(|n| n as usize), buf)
    }

    /// Reads at `offset` until `buf` is full or the file ends; returns the bytes read.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::fs::File;
    /// use std::io;
    ///
    /// // Record `i` of a file of 128-byte records; `None` past the last whole one.
    /// async fn record(file: &File, i: u64) -> io::Result<Option<[u8; 128]>> {
    ///     let mut rec = [0u8; 128];
    ///     let n = file.read_exact_at(&mut rec, i * 128).await?;
    ///     Ok((n == rec.len()).then_some(rec))
    /// }
    /// ```
    pub async fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.read_at(&mut buf[done..], offset + done as u64).await? {
                0 => break,
                n => done += n,
            }
        }
        Ok(done)
    }
}

impl AsRawFd for File {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A directory that paths are resolved beneath, as a static file server needs: no path
/// given to [`Dir::open_file`] or [`Dir::metadata`] reaches outside it, whether by `..`,
/// an absolute path, or a symbolic link (the kernel refuses them: `openat2` with
/// `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`).
///
/// See the [`fs`](crate::rt::fs) module's example.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

/// How paths are resolved beneath a [`Dir`].
const BENEATH: u64 = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;

impl Dir {
    /// Opens the directory at `path` as a root.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::fs::{Dir, File};
    /// use std::io;
    ///
    /// // Opens a user's upload by the name the client gave: it cannot leave the uploads directory.
    /// async fn upload(name: &str) -> io::Result<File> {
    ///     let uploads = Dir::open("/var/lib/myapp/uploads").await?;
    ///     uploads.open_file(name).await
    /// }
    /// ```
    pub async fn open(path: impl AsRef<Path>) -> io::Result<Dir> {
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        let fd = open_at(libc::AT_FDCWD, path.as_ref(), flags, 0).await?;
        Ok(Dir { fd })
    }

    /// Opens `path` (relative to this root, and inside it) for reading.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::fs::{Dir, File};
    /// use std::io;
    ///
    /// // A path that leads out of the root (`../../etc/passwd`, `/etc/passwd`, or a link to a
    /// // place outside it) fails with `EXDEV`: such a request is answered as one for nothing.
    /// async fn asset(root: &Dir, path: &str) -> io::Result<Option<File>> {
    ///     match root.open_file(path).await {
    ///         Ok(file) => Ok(Some(file)),
    ///         Err(e) if e.kind() == io::ErrorKind::CrossesDevices => Ok(None),
    ///         Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
    ///         Err(e) => Err(e),
    ///     }
    /// }
    /// ```
    pub async fn open_file(&self, path: impl AsRef<Path>) -> io::Result<File> {
        let fd = open_at(self.fd.as_raw_fd(), path.as_ref(), libc::O_RDONLY, BENEATH).await?;
        Ok(File { fd })
    }

    /// The metadata of `path` inside this root (it is opened beneath the root first, so
    /// that the same rule holds).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::fs::Dir;
    /// use std::io;
    ///
    /// // The file to answer a path with: a directory's `index.html`, else the path itself.
    /// async fn resolve(root: &Dir, path: &str) -> io::Result<String> {
    ///     let meta = root.metadata(path).await?;
    ///     Ok(match meta.is_dir() {
    ///         true => format!("{}/index.html", path.trim_end_matches('/')),
    ///         false => path.to_string(),
    ///     })
    /// }
    /// ```
    pub async fn metadata(&self, path: impl AsRef<Path>) -> io::Result<Metadata> {
        let flags = libc::O_PATH;
        let fd = open_at(self.fd.as_raw_fd(), path.as_ref(), flags, BENEATH).await?;
        stat_at(fd.as_raw_fd(), Path::new(""), libc::AT_EMPTY_PATH).await
    }
}
