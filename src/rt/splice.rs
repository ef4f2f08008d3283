//! File ranges sent by `splice(2)` on the ring: the file's pages go from the page cache
//! into a pipe and from the pipe into the socket by reference, no byte copied through user
//! space (what `sendfile` does; io_uring has no sendfile, but has splice).
//!
//! Each range being sent holds one pipe from its worker's pool, which is bounded
//! ([`SPLICE_PIPES_MAX`]). The bound matters twice over: the kernel runs every splice on an
//! io-wq thread, which a slow client's full socket blocks until the chunk is sent, so the
//! pool also bounds those threads; and pipe buffers count against the user's
//! `fs.pipe-user-pages-soft` (16,384 pages, 64 MiB, by default for an unprivileged user:
//! past it the kernel refuses larger pipes and gives new ones two pages, which this module
//! refuses in turn). When no pipe can be had, a body is read and sent instead (a copy), so
//! a crowd of slow clients never stalls the others. The pages a pipe holds are the page
//! cache's own, referenced, not copies.
//!
//! Measured against sending from memory, in one run of `cargo bench --bench compare`
//! (64 connections, keep-alive, CPU per request of the server's tree): at 64 KiB one send
//! from memory cost 19.8 µs and splice 22.6 µs (nginx's sendfile 21.2 µs), since each
//! splice is a hand-off to an io-wq thread and back; at 1 MiB splice cost 111 µs (nginx
//! 139 µs) where reading and sending cost 270–360 µs. Hence ranges from
//! [`SPLICE_BYTES_MIN`] up go by splice, and files up to that size are kept in memory by
//! [`files::Static`](crate::files::Static).

use crate::http::BodyWriter;
use crate::rt::fs::File;
use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;

/// The most pipes one worker holds for splicing: the most file ranges it sends by splice
/// at once (others are read and sent), and so the most io-wq threads its splices occupy.
///
/// See [`BodyWriter::send_file`]'s example.
pub const SPLICE_PIPES_MAX: usize = 64;

/// The smallest range sent by splice: below it one read and one send cost less than the
/// hand-off to an io-wq thread (see the module's measurements).
///
/// See [`BodyWriter::send_file`]'s example.
pub const SPLICE_BYTES_MIN: u64 = 64 * 1024;

/// The most bytes read at once when a range is read and sent instead of spliced.
const READ_CHUNK_BYTES: usize = 256 * 1024;

impl BodyWriter {
    /// Sends `len` bytes of `file` from `offset`, after everything written before: by
    /// `splice` through a pipe of the worker's pool when the range is at least
    /// [`SPLICE_BYTES_MIN`] and a pipe is free (the page cache's pages go to the socket, no
    /// copy in user space), else read through the ring into a vector that is sent as it is.
    ///
    /// Fails like [`BodyWriter::write`] (the client is gone; past the declared length),
    /// and with `UnexpectedEof` when the file ends before the range does (read path; a
    /// spliced range that ends early closes the connection, the length being promised).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::fs::File;
    /// use ringmaster::Response;
    /// use std::rc::Rc;
    ///
    /// // Answers a range request `bytes=from-`: the file from `from` to its end.
    /// async fn tail_of(path: &str, from: u64) -> Response {
    ///     let opened = async {
    ///         let file = File::open(path).await?;
    ///         let len = file.metadata().await?.len;
    ///         Ok::<_, std::io::Error>((Rc::new(file), len))
    ///     };
    ///     let mut res = Response::new();
    ///     match opened.await {
    ///         Ok((file, len)) if from < len => {
    ///             let range = format!("bytes {from}-{}/{len}", len - 1);
    ///             res.status(206).header("Content-Range", range);
    ///             // By splice when the range is large: no byte copied through user space.
    ///             res.stream(Some(len - from), move |mut body| async move {
    ///                 body.send_file(&file, from, len - from).await
    ///             });
    ///         }
    ///         Ok((_, len)) => {
    ///             res.status(416).header("Content-Range", format!("bytes */{len}"));
    ///         }
    ///         Err(_) => {
    ///             res.status(404);
    ///         }
    ///     }
    ///     res
    /// }
    /// ```
    pub async fn send_file(&mut self, file: &Rc<File>, offset: u64, len: u64) -> io::Result<()> {
        if len >= SPLICE_BYTES_MIN {
            // Everything before it is taken first; then it goes in whole, or not at all.
            poll_fn(|cx| self.poll_room(cx, len, true)).await?;
            if let Some(pipe) = take_pipe() {
                self.pipe.borrow_mut().push_file(FileRange {
                    file: file.clone(),
                    offset,
                    left: len,
                    pipe,
                });
                return Ok(());
            }
        }
        let end = offset + len;
        let chunk = READ_CHUNK_BYTES.min(len as usize);
        let mut buf = Vec::with_capacity(chunk);
        let mut at = offset;
        while at < end {
            // No more than `want`: past it is another range's, or nothing.
            let want = ((end - at) as usize).min(chunk);
            buf.clear();
            let (read, got) = file.read_at_vec(buf, at, want).await;
            buf = got;
            let n = read?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended before its length",
                ));
            }
            at += n as u64;
            // The kernel read into a vector that the connection sends as it is.
            buf = self.write_vec(buf).await?;
        }
        Ok(())
    }
}

/// The size each pipe of the pool is asked for (`F_SETPIPE_SZ`; `fs.pipe-max-size` is
/// 1 MiB by default): a range moves a pipe's worth per fill and drain, each a hand-off to an
/// io-wq thread. A 1 MiB file cost 270 µs of CPU through 64 KiB pipes, 130 µs through
/// 256 KiB and 108 µs through 1 MiB ones (`ringmaster --static`, 64 connections, wrk).
///
/// See [`BodyWriter::send_file`]'s example.
pub const SPLICE_PIPE_BYTES: usize = 1 << 20;

/// The smallest pipe used (the default size): a smaller one is refused, and the range is
/// read and sent instead.
const SPLICE_PIPE_BYTES_MIN: usize = 64 * 1024;

/// A pipe of the pool, lent to one range until it is sent.
#[derive(Debug)]
pub(crate) struct SplicePipe {
    /// The read and write ends; taken only by `drop`.
    ends: Option<(OwnedFd, OwnedFd)>,
    /// The pipe's capacity in bytes (`F_GETPIPE_SZ`): the most one fill moves.
    capacity: u32,
    /// Bytes in the pipe, spliced in and not yet out.
    pub(crate) held: u32,
}

impl SplicePipe {
    fn ends(&self) -> &(OwnedFd, OwnedFd) {
        self.ends
            .as_ref()
            .expect("a pipe's ends are taken only by its drop")
    }

    pub(crate) fn read_fd(&self) -> RawFd {
        self.ends().0.as_raw_fd()
    }

    pub(crate) fn write_fd(&self) -> RawFd {
        self.ends().1.as_raw_fd()
    }

    pub(crate) fn capacity(&self) -> u32 {
        self.capacity
    }
}

impl Drop for SplicePipe {
    fn drop(&mut self) {
        let ends = self.ends.take();
        let empty = self.held == 0;
        // `try_with`: a pipe dropped while the thread's locals are torn down is just closed.
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            pool.out -= 1;
            // A pipe with bytes left in it (a send cut short) is closed, not reused.
            if let (true, Some((read, write))) = (empty, ends) {
                pool.free.push((read, write, self.capacity));
            }
        });
    }
}

#[derive(Default)]
struct Pool {
    free: Vec<(OwnedFd, OwnedFd, u32)>,
    /// Pipes lent out now.
    out: usize,
}

thread_local! {
    /// The worker's pipes. Every worker thread has its own; pipes never cross threads.
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// A free pipe of this worker's pool, made when none is free and the pool is under its
/// bound; `None` at the bound or when the system refuses a pipe (send by copying then).
pub(crate) fn take_pipe() -> Option<SplicePipe> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let (read, write, capacity) = match pool.free.pop() {
            Some(p) => p,
            None if pool.out < SPLICE_PIPES_MAX => new_pipe()?,
            None => return None,
        };
        pool.out += 1;
        Some(SplicePipe {
            ends: Some((read, write)),
            capacity,
            held: 0,
        })
    })
}

/// Pipes of this worker's pool lent out now.
pub(crate) fn pipes_lent() -> usize {
    POOL.with(|pool| pool.borrow().out)
}

fn new_pipe() -> Option<(OwnedFd, OwnedFd, u32)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
    // SAFETY: F_SETPIPE_SZ takes an int. It fails (EPERM) past the user's pipe pages or
    // `fs.pipe-max-size`; the pipe keeps the size it has, checked next.
    unsafe {
        libc::fcntl(
            write.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            SPLICE_PIPE_BYTES as i32,
        )
    };
    // SAFETY: F_GETPIPE_SZ takes no argument and returns the capacity or -1.
    let capacity = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
    // A pipe the kernel shrank (the user is past `fs.pipe-user-pages-soft`) would move a
    // few pages a hand-off: reading and sending costs less than that.
    let capacity = u32::try_from(capacity)
        .ok()
        .filter(|&c| c as usize >= SPLICE_PIPE_BYTES_MIN)?;
    Some((read, write, capacity))
}

/// A range of a file to send by splice, with the pipe it goes through.
#[derive(Debug)]
pub(crate) struct FileRange {
    /// Kept open until the range is sent.
    pub(crate) file: Rc<File>,
    /// Where the next fill starts.
    pub(crate) offset: u64,
    /// Bytes not yet spliced into the pipe.
    pub(crate) left: u64,
    pub(crate) pipe: SplicePipe,
}

impl FileRange {
    /// Bytes not yet sent: in the file and in the pipe.
    pub(crate) fn unsent(&self) -> u64 {
        self.left + u64::from(self.pipe.held)
    }
}

impl PartialEq for FileRange {
    fn eq(&self, other: &FileRange) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for FileRange {}
