//! TCP for handler code: [`TcpStream`], whose connect, reads, writes and shutdown are ring
//! operations of the worker (`IORING_OP_CONNECT`, `READ`, `SEND`, `SHUTDOWN`), each with
//! an optional deadline.
//!
//! The ring must own the memory an operation lends the kernel until its final completion,
//! whatever the future does, so reads go into a buffer the ring holds and are copied out,
//! and writes are copied into one. Dropping a read or write future cancels its operation;
//! the bytes a cancelled write had already sent stay sent.

use super::op::RingOp;
use super::time::timeout;
use ringmaster_uring::{Desc, Op, Owned, SockAddr};
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// The most bytes one read or write moves (a larger buffer is served in parts).
///
/// See [`TcpStream::read`]'s example, which reads until its buffer is full.
pub const IO_BYTES_MAX: usize = 64 * 1024;
/// Buffers the runtime keeps for reads and writes between operations.
const SPARE_BUFS_MAX: usize = 256;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of at least `len` bytes of capacity, reused when one is spare.
fn take_buf(len: usize) -> Vec<u8> {
    let mut buf = SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    buf.clear();
    buf.reserve(len);
    buf
}

fn put_buf(buf: Vec<u8>) {
    if buf.capacity() > IO_BYTES_MAX {
        return;
    }
    SPARE.with(|s| {
        let mut spare = s.borrow_mut();
        if spare.len() < SPARE_BUFS_MAX {
            spare.push(buf);
        }
    });
}

/// Runs `fut` within `deadline` when one is set; past it, `TimedOut` (and `fut` is dropped,
/// cancelling its operation).
async fn within<T>(
    deadline: Option<Duration>,
    what: &str,
    fut: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match deadline {
        None => fut.await,
        Some(d) => match timeout(d, fut).await {
            Ok(out) => out,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{what} took longer than {d:?}"),
            )),
        },
    }
}

fn result(res: i32) -> io::Result<u32> {
    match res {
        r if r >= 0 => Ok(r as u32),
        r => Err(io::Error::from_raw_os_error(-r)),
    }
}

/// A TCP connection whose I/O goes through the worker's ring. Not thread-safe: it belongs
/// to the worker it was made on.
///
/// See [`rt`](crate::rt)'s example.
#[derive(Debug)]
pub struct TcpStream {
    fd: OwnedFd,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl TcpStream {
    /// Connects to `addr` (a ring connect).
    ///
    /// # Panics
    /// When polled outside a worker.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::TcpStream;
    /// use std::io;
    /// use std::net::SocketAddr;
    ///
    /// // Opens a connection to a backend named in the configuration.
    /// async fn backend(addr: &str) -> io::Result<TcpStream> {
    ///     let addr: SocketAddr = addr
    ///         .parse()
    ///         .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    ///     TcpStream::connect(addr).await
    /// }
    /// ```
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let family = match addr {
            SocketAddr::V4(_) => libc::AF_INET,
            SocketAddr::V6(_) => libc::AF_INET6,
        };
        // SAFETY: socket(2) with constant arguments; the descriptor is owned at once.
        let raw = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor of this process that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let op = Op::Connect {
            fd: fd.as_raw_fd(),
            addr: Box::new(SockAddr::from_std(addr)),
        };
        result(RingOp::new(op).await.result)?;
        Ok(TcpStream {
            fd,
            read_timeout: None,
            write_timeout: None,
        })
    }

    /// Connects to `addr` within `limit` (`TimedOut` past it).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::TcpStream;
    /// use std::io;
    /// use std::net::SocketAddr;
    /// use std::time::Duration;
    ///
    /// // A cache that does not accept within 50 ms is treated as down (`None`), not as an error.
    /// async fn cache() -> io::Result<Option<TcpStream>> {
    ///     let addr = SocketAddr::from(([10, 0, 0, 7], 11211));
    ///     match TcpStream::connect_timeout(addr, Duration::from_millis(50)).await {
    ///         Ok(conn) => Ok(Some(conn)),
    ///         Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(None),
    ///         Err(e) => Err(e),
    ///     }
    /// }
    /// ```
    pub async fn connect_timeout(addr: SocketAddr, limit: Duration) -> io::Result<TcpStream> {
        within(Some(limit), "connect", TcpStream::connect(addr)).await
    }

    /// The deadline of each read from now on (`None`: none). A read past it fails with
    /// `TimedOut`, and nothing it would have read is lost from the stream but what the
    /// kernel had already handed over.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::TcpStream;
    /// use std::io;
    /// use std::time::Duration;
    ///
    /// // A backend that stays silent for a second is given up on (`TimedOut`).
    /// async fn reply(conn: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    ///     conn.set_read_timeout(Some(Duration::from_secs(1)));
    ///     conn.read(buf).await
    /// }
    /// ```
    pub fn set_read_timeout(&mut self, limit: Option<Duration>) {
        self.read_timeout = limit;
    }

    /// The deadline of each write from now on (`None`: none).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::TcpStream;
    /// use std::io;
    /// use std::time::Duration;
    ///
    /// // Each write to a log collector gets 200 ms: a collector that stops reading fails it.
    /// async fn ship(conn: &mut TcpStream, lines: &[u8]) -> io::Result<()> {
    ///     conn.set_write_timeout(Some(Duration::from_millis(200)));
    ///     conn.write_all(lines).await
    /// }
    /// ```
    pub fn set_write_timeout(&mut self, limit: Option<Duration>) {
        self.write_timeout = limit;
    }

    /// Sets `TCP_NODELAY` (small writes go out at once).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::TcpStream;
    /// use std::io;
    ///
    /// // Small request-and-answer exchanges: send each command at once, not after Nagle's delay.
    /// async fn get(conn: &mut TcpStream, key: &str) -> io::Result<()> {
    ///     conn.set_nodelay(true)?;
    ///     conn.write_all(format!("get {key}\r\n").as_bytes()).await
    /// }
    /// ```
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        nix::sys::socket::setsockopt(&self.fd, nix::sys::socket::sockopt::TcpNoDelay, &on)
            .map_err(io::Error::from)
    }

    /// The address of the peer.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::TcpStream;
    ///
    /// // Names the backend in a log line.
    /// fn log_failure(conn: &TcpStream, error: &std::io::Error) {
    ///     match conn.peer_addr() {
    ///         Ok(peer) => tracing::warn!(%peer, %error, "backend failed"),
    ///         Err(_) => tracing::warn!(%error, "backend failed (and is gone)"),
    ///     }
    /// }
    /// ```
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.borrowed(|s| s.peer_addr())
    }

    /// The local address.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::TcpStream;
    /// use std::io;
    ///
    /// // The local port of a connection, to match it with the backend's own logs.
    /// fn local_port(conn: &TcpStream) -> io::Result<u16> {
    ///     Ok(conn.local_addr()?.port())
    /// }
    /// ```
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.borrowed(|s| s.local_addr())
    }

    fn borrowed<T>(&self, f: impl FnOnce(&std::net::TcpStream) -> T) -> T {
        // SAFETY: the descriptor stays owned by `self`; the std stream is never dropped
        // (ManuallyDrop), so it does not close it.
        let s = std::mem::ManuallyDrop::new(unsafe {
            std::net::TcpStream::from_raw_fd(self.fd.as_raw_fd())
        });
        f(&s)
    }

    /// Reads what is there, at most `buf.len()` (and [`IO_BYTES_MAX`]) bytes, waiting for
    /// at least one; `Ok(0)` at the end of the stream.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::TcpStream;
    /// use std::io;
    ///
    /// // Reads the 4-byte length that starts each frame: it may come in parts.
    /// async fn frame_len(conn: &mut TcpStream) -> io::Result<u32> {
    ///     let mut head = [0u8; 4];
    ///     let mut got = 0;
    ///     while got < head.len() {
    ///         match conn.read(&mut head[got..]).await? {
    ///             0 => return Err(io::ErrorKind::UnexpectedEof.into()),
    ///             n => got += n,
    ///         }
    ///     }
    ///     Ok(u32::from_be_bytes(head))
    /// }
    /// ```
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let fd = self.fd.as_raw_fd();
        let len = buf.len().min(IO_BYTES_MAX);
        within(self.read_timeout, "read", async move {
            let op = Op::Read {
                fd,
                buf: take_buf(len),
            };
            let outcome = RingOp::new(op).await;
            let Owned::Buf(got) = outcome.owned else {
                unreachable!("a read hands its buffer back")
            };
            let n = result(outcome.result).map(|n| n as usize);
            if let Ok(n) = n {
                // The kernel read at most the spare capacity, which may exceed `len`.
                buf[..n.min(len)].copy_from_slice(&got[..n.min(len)]);
            }
            put_buf(got);
            n.map(|n| n.min(len))
        })
        .await
    }

    /// Reads what is there, at most `max` bytes (and [`IO_BYTES_MAX`]), into `buf` after
    /// what it holds, waiting for at least one byte, and hands `buf` back grown by what was
    /// read (`Ok(0)`: the end of the stream). The kernel reads into `buf` itself: no copy,
    /// no zeroing, no allocation when `buf` is reused with room for `max`. After a timeout
    /// the buffer stays with the ring until the kernel lets go of it, and an empty one comes
    /// back.
    ///
    /// A `max` of 0 reads nothing: `Ok(0)`, `buf` as it was.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::TcpStream;
    /// use std::io;
    ///
    /// // Reads a backend's answer up to the end of its stream, at most 1 MiB, with no copy.
    /// async fn answer(conn: &mut TcpStream) -> io::Result<Vec<u8>> {
    ///     const LIMIT: usize = 1 << 20;
    ///     let mut buf = Vec::with_capacity(16 * 1024);
    ///     while buf.len() < LIMIT {
    ///         let max = (LIMIT - buf.len()).min(16 * 1024);
    ///         let (read, back) = conn.read_vec(buf, max).await;
    ///         buf = back;
    ///         if read? == 0 {
    ///             return Ok(buf);
    ///         }
    ///     }
    ///     Err(io::Error::new(io::ErrorKind::InvalidData, "an answer over 1 MiB"))
    /// }
    /// ```
    pub async fn read_vec(&mut self, buf: Vec<u8>, max: usize) -> (io::Result<usize>, Vec<u8>) {
        if max == 0 {
            // A read of nothing, as `read` with an empty buffer: nothing to ask the ring.
            return (Ok(0), buf);
        }
        let buf = super::room_for(buf, max.min(IO_BYTES_MAX));
        let fd = self.fd.as_raw_fd();
        let mut back = None;
        let read = within(self.read_timeout, "read", async {
            let outcome = RingOp::new(Op::Read { fd, buf }).await;
            let Owned::Buf(got) = outcome.owned else {
                unreachable!("a read hands its buffer back")
            };
            back = Some(got);
            result(outcome.result).map(|n| n as usize)
        })
        .await;
        (read, back.unwrap_or_default())
    }

    /// Writes some of `buf` (at most [`IO_BYTES_MAX`] bytes); returns how many went out.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::TcpStream;
    /// use std::io;
    ///
    /// // Sends what the socket takes now and returns the rest, to send after the next read.
    /// async fn send_some<'a>(conn: &mut TcpStream, out: &'a [u8]) -> io::Result<&'a [u8]> {
    ///     let n = conn.write(out).await?;
    ///     Ok(&out[n..])
    /// }
    /// ```
    pub async fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let fd = self.fd.as_raw_fd();
        within(self.write_timeout, "write", send(fd, buf)).await
    }

    /// Writes all of `buf`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::TcpStream;
    /// use std::io;
    ///
    /// // Sends a whole request to an HTTP backend.
    /// async fn ask(conn: &mut TcpStream, path: &str) -> io::Result<()> {
    ///     let head = format!("GET {path} HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n");
    ///     conn.write_all(head.as_bytes()).await
    /// }
    /// ```
    pub async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write(buf).await? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => buf = &buf[n..],
            }
        }
        Ok(())
    }

    /// Shuts down the reading side, the writing side, or both (a ring shutdown).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::rt::TcpStream;
    /// use std::io;
    /// use std::net::Shutdown;
    ///
    /// // A backend that reads its query up to the end of the stream: send it, then say it ended.
    /// async fn query(conn: &mut TcpStream, q: &[u8]) -> io::Result<()> {
    ///     conn.write_all(q).await?;
    ///     conn.shutdown(Shutdown::Write).await
    /// }
    /// ```
    pub async fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        let how = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        let op = Op::Shutdown {
            fd: Desc::Plain(self.fd.as_raw_fd()),
            how,
        };
        result(RingOp::new(op).await.result).map(drop)
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// One send of (at most [`IO_BYTES_MAX`] of) `bytes` on `fd`.
async fn send(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    let len = bytes.len().min(IO_BYTES_MAX);
    let mut buf = take_buf(len);
    buf.extend_from_slice(&bytes[..len]);
    let op = Op::Send {
        fd: Desc::Plain(fd),
        buf,
        offset: 0,
        more: false,
    };
    let outcome = RingOp::new(op).await;
    if let Owned::Buf(buf) = outcome.owned {
        put_buf(buf);
    }
    result(outcome.result).map(|n| n as usize)
}
