//! Each typed entry against real sockets and pipes. A test whose kernel lacks what it needs
//! prints why and returns early, never passes silently on a kernel that has it.

use ringmaster_uring::{
    BufRing, Completion, Desc, Features, Op, Owned, Ring, RingConfig, SetupMode,
};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The longest any test waits for a completion it expects.
const WAIT_MAX: Duration = Duration::from_secs(5);

fn features() -> Option<Features> {
    match Features::probe() {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("skipped: io_uring unavailable here: {e}");
            None
        }
    }
}

fn ring() -> Ring {
    Ring::new(&RingConfig::default()).expect("ring")
}

/// Submits and reaps until `count` completions arrived or `WAIT_MAX` passed.
fn wait_for(ring: &mut Ring, count: usize) -> Vec<Completion> {
    let deadline = Instant::now() + WAIT_MAX;
    // `reap` fills only spare capacity, never growing the vector.
    let mut out = Vec::with_capacity(count.max(ring.cq_capacity()));
    while out.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {} of {count} completions arrived",
            out.len()
        );
        ring.submit_and_wait_timeout(1, left).expect("enter");
        ring.reap(&mut out);
    }
    out
}

/// SO_LINGER {on, 0}: closing sends RST instead of FIN.
fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY (test): a valid socket and a `linger` that outlives the call.
    let ret = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0);
}

fn connected_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

#[test]
fn setup_uses_the_strongest_mode_the_kernel_accepts() {
    let Some(features) = features() else { return };
    let ring = ring();
    assert_eq!(ring.mode(), features.setup);
    eprintln!(
        "setup {:?}, registered ring fd {}, missing {:?}",
        ring.mode(),
        ring.ring_fd_registered(),
        features.missing()
    );
    let plain: Ring = Ring::new(&RingConfig {
        setup: SetupMode::Plain,
        ..RingConfig::default()
    })
    .unwrap();
    assert_eq!(plain.mode(), SetupMode::Plain);
}

#[test]
fn bad_sizes_are_refused() {
    for (sq, cq) in [(0, 16), (64, 32), (40000, 80000)] {
        let config = RingConfig {
            sq_entries: sq,
            cq_entries: cq,
            ..RingConfig::default()
        };
        assert!(
            Ring::<u64>::new(&config).is_err(),
            "sq {sq} cq {cq} accepted"
        );
    }
}

#[test]
fn multishot_accept_yields_one_completion_per_connection() {
    let Some(features) = features() else { return };
    if !features.multishot_accept {
        eprintln!("skipped: kernel lacks multishot accept");
        return;
    }
    let mut ring = ring();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = ring
        .push(
            Op::AcceptMulti {
                fd: listener.as_raw_fd(),
                direct: false,
            },
            1,
        )
        .unwrap();
    let _clients: Vec<_> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let done = wait_for(&mut ring, 3);
    for c in &done {
        assert_eq!(c.id, accept);
        assert_eq!(c.tag, 1);
        assert!(c.result >= 0, "accept failed: {}", c.result);
        assert!(c.more(), "multishot accept disarmed");
        // SAFETY (test): the descriptor was just accepted for us and is closed once.
        unsafe { libc::close(c.result) };
    }
    ring.push(Op::Cancel { target: accept }, 2).unwrap();
    let done = wait_for(&mut ring, 2);
    let ended = done.iter().find(|c| c.tag == 1).expect("accept ended");
    assert_eq!(ended.result, -libc::ECANCELED);
    assert!(!ended.more());
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn single_accept_takes_exactly_one() {
    let Some(_) = features() else { return };
    let mut ring = ring();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    ring.push(
        Op::Accept {
            fd: listener.as_raw_fd(),
            direct: false,
        },
        5,
    )
    .unwrap();
    let _a = TcpStream::connect(addr).unwrap();
    let _b = TcpStream::connect(addr).unwrap();
    let done = wait_for(&mut ring, 1);
    assert!(done[0].result >= 0 && !done[0].more());
    // SAFETY (test): accepted descriptor, closed once.
    unsafe { libc::close(done[0].result) };
    // The second connection is still queued on the listener.
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_ok());
}

#[test]
fn multishot_recv_picks_provided_buffers() {
    let Some(features) = features() else { return };
    if !features.multishot_recv || !features.buf_ring {
        eprintln!("skipped: kernel lacks multishot recv or buffer rings");
        return;
    }
    let mut ring = ring();
    ring.register_buf_ring(BufRing::new(3, 8, 64).unwrap())
        .unwrap();
    let (mut client, server) = connected_pair();
    ring.push(
        Op::RecvMulti {
            fd: Desc::Plain(server.as_raw_fd()),
            group: 3,
        },
        9,
    )
    .unwrap();
    let mut received = Vec::new();
    for chunk in [&b"hello "[..], b"multishot ", b"world"] {
        client.write_all(chunk).unwrap();
        let done = wait_for(&mut ring, 1);
        for c in done {
            assert!(c.more());
            let bid = c.buffer_id().expect("a buffer was picked");
            received.extend_from_slice(ring.buffer(3, bid, c.result as usize));
            ring.give_back(3, bid);
        }
    }
    assert_eq!(received, b"hello multishot world");
    assert_eq!(ring.buf_ring(3).held_count(), 0);
    drop(client);
    let done = wait_for(&mut ring, 1);
    assert_eq!(done[0].result, 0, "end of stream");
    assert!(!done[0].more());
}

#[test]
fn recv_without_buffers_ends_with_enobufs_and_rearms() {
    let Some(features) = features() else { return };
    if !features.multishot_recv || !features.buf_ring {
        eprintln!("skipped: kernel lacks multishot recv or buffer rings");
        return;
    }
    let mut ring = ring();
    ring.register_buf_ring(BufRing::new(4, 1, 8).unwrap())
        .unwrap();
    let (mut client, server) = connected_pair();
    let arm = |ring: &mut Ring| {
        ring.push(
            Op::RecvMulti {
                fd: Desc::Plain(server.as_raw_fd()),
                group: 4,
            },
            1,
        )
        .unwrap()
    };
    arm(&mut ring);
    client.write_all(b"0123456789abcdef").unwrap();
    // One buffer of 8 bytes: the first completion takes it, the next finds none.
    let done = wait_for(&mut ring, 2);
    let bid = done[0].buffer_id().unwrap();
    assert_eq!(ring.buffer(4, bid, done[0].result as usize), b"01234567");
    assert_eq!(done[1].result, -libc::ENOBUFS);
    assert!(!done[1].more(), "ENOBUFS ends the multishot recv");
    ring.give_back(4, bid);
    arm(&mut ring);
    let done = wait_for(&mut ring, 1);
    let bid = done[0].buffer_id().unwrap();
    assert_eq!(ring.buffer(4, bid, done[0].result as usize), b"89abcdef");
    ring.give_back(4, bid);
}

#[test]
fn send_hands_the_buffer_back() {
    let Some(_) = features() else { return };
    let mut ring = ring();
    let (mut client, server) = connected_pair();
    let buf = b"response bytes".to_vec();
    ring.push(
        Op::Send {
            fd: Desc::Plain(server.as_raw_fd()),
            buf,
            offset: 9,
            more: false,
        },
        3,
    )
    .unwrap();
    let done = wait_for(&mut ring, 1);
    assert_eq!(done[0].result, 5);
    match &done[0].owned {
        Owned::Buf(b) => assert_eq!(b, b"response bytes"),
        other => panic!("send handed back {other:?}"),
    }
    let mut got = [0u8; 5];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"bytes");
}

#[test]
fn send_to_a_reset_peer_fails_without_sigpipe() {
    let Some(_) = features() else { return };
    let mut ring = ring();
    let (client, server) = connected_pair();
    set_linger_zero(&client);
    drop(client);
    // The first send may still succeed before the RST is processed; repeat until it fails.
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        ring.push(
            Op::Send {
                fd: Desc::Plain(server.as_raw_fd()),
                buf: vec![b'x'; 1024],
                offset: 0,
                more: false,
            },
            1,
        )
        .unwrap();
        let done = wait_for(&mut ring, 1);
        if done[0].result < 0 {
            assert!(
                [libc::ECONNRESET, libc::EPIPE].contains(&-done[0].result),
                "unexpected {}",
                done[0].result
            );
            break;
        }
        assert!(Instant::now() < deadline, "send kept succeeding");
    }
}

#[test]
fn read_fills_spare_capacity_from_a_pipe() {
    let Some(_) = features() else { return };
    let mut ring = ring();
    let (reader, mut writer) = std::io::pipe().unwrap();
    let mut buf = Vec::with_capacity(32);
    buf.extend_from_slice(b"ab");
    ring.push(
        Op::Read {
            fd: reader.as_raw_fd(),
            buf,
        },
        4,
    )
    .unwrap();
    writer.write_all(b"cdef").unwrap();
    let done = wait_for(&mut ring, 1);
    assert_eq!(done[0].result, 4);
    match &done[0].owned {
        Owned::Buf(b) => assert_eq!(b, b"abcdef"),
        other => panic!("read handed back {other:?}"),
    }
}

#[test]
fn close_and_shutdown_act_on_the_socket() {
    let Some(_) = features() else { return };
    let mut ring = ring();
    let (mut client, server) = connected_pair();
    ring.push(
        Op::Shutdown {
            fd: Desc::Plain(server.as_raw_fd()),
            how: libc::SHUT_WR,
        },
        1,
    )
    .unwrap();
    let done = wait_for(&mut ring, 1);
    assert_eq!(done[0].result, 0);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "peer sees end of stream");
    let fd = std::os::fd::IntoRawFd::into_raw_fd(server);
    ring.push(
        Op::Close {
            fd: Desc::Plain(fd),
        },
        2,
    )
    .unwrap();
    let done = wait_for(&mut ring, 1);
    assert_eq!(done[0].result, 0);
    // SAFETY (test): fd was closed by the ring; fcntl on it must now fail.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_GETFD) }, -1);
}

#[test]
fn cancel_ends_a_pending_recv() {
    let Some(features) = features() else { return };
    if !features.multishot_recv || !features.buf_ring {
        eprintln!("skipped: kernel lacks multishot recv or buffer rings");
        return;
    }
    let mut ring = ring();
    ring.register_buf_ring(BufRing::new(0, 4, 64).unwrap())
        .unwrap();
    let (_client, server) = connected_pair();
    let recv = ring
        .push(
            Op::RecvMulti {
                fd: Desc::Plain(server.as_raw_fd()),
                group: 0,
            },
            1,
        )
        .unwrap();
    ring.push(Op::Cancel { target: recv }, 2).unwrap();
    let done = wait_for(&mut ring, 2);
    let recv_end = done.iter().find(|c| c.tag == 1).unwrap();
    let cancel = done.iter().find(|c| c.tag == 2).unwrap();
    assert_eq!(recv_end.result, -libc::ECANCELED);
    assert_eq!(cancel.result, 0);
    // Cancelling what has already ended is reported, not fatal.
    ring.push(Op::Cancel { target: recv }, 3).unwrap();
    let done = wait_for(&mut ring, 1);
    assert_eq!(done[0].result, -libc::ENOENT);
}

#[test]
fn timeout_fires_and_hands_its_timespec_back() {
    let Some(_) = features() else { return };
    let mut ring = ring();
    let start = Instant::now();
    ring.push(Op::timeout(Duration::from_millis(20)), 8)
        .unwrap();
    let done = wait_for(&mut ring, 1);
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert_eq!(done[0].result, -libc::ETIME);
    assert!(matches!(done[0].owned, Owned::Timespec(_)));
}

#[test]
fn full_in_flight_table_refuses_work() {
    let Some(_) = features() else { return };
    let mut ring = Ring::new(&RingConfig {
        inflight_max: 2,
        ..RingConfig::default()
    })
    .unwrap();
    ring.push(Op::timeout(Duration::from_secs(60)), 1).unwrap();
    ring.push(Op::timeout(Duration::from_secs(60)), 2).unwrap();
    let err = ring
        .push(Op::timeout(Duration::from_secs(60)), 3)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::OutOfMemory);
}

#[test]
fn a_full_submission_queue_is_flushed_not_dropped() {
    let Some(_) = features() else { return };
    let mut ring = Ring::new(&RingConfig {
        sq_entries: 4,
        cq_entries: 64,
        inflight_max: 64,
        ..RingConfig::default()
    })
    .unwrap();
    for tag in 0..20 {
        ring.push(Op::timeout(Duration::from_millis(1)), tag)
            .unwrap();
    }
    let done = wait_for(&mut ring, 20);
    let mut tags: Vec<u64> = done.iter().map(|c| c.tag).collect();
    tags.sort_unstable();
    assert_eq!(tags, (0..20).collect::<Vec<_>>());
}

#[test]
fn reap_never_grows_its_vector() {
    let Some(_) = features() else { return };
    let mut ring = ring();
    for tag in 0..6 {
        ring.push(Op::timeout(Duration::from_millis(1)), tag)
            .unwrap();
    }
    let deadline = Instant::now() + WAIT_MAX;
    let mut total = 0;
    while total < 6 {
        assert!(Instant::now() < deadline);
        ring.submit_and_wait_timeout(6, Duration::from_millis(100))
            .unwrap();
        let mut out = Vec::with_capacity(4);
        let n = ring.reap(&mut out);
        assert!(n <= 4 && out.capacity() == 4);
        total += n;
    }
}

#[test]
fn completions_beyond_the_queue_are_kept_and_reaped_later() {
    let Some(features) = features() else { return };
    if !features.nodrop {
        eprintln!("skipped: kernel drops overflowing completions (no IORING_FEAT_NODROP)");
        return;
    }
    // A completion queue of 8 and 64 operations finishing at once: the kernel parks the
    // overflow, enters report it (EBUSY or the overflow flag), and reaping drains it all.
    let mut ring = Ring::new(&RingConfig {
        sq_entries: 8,
        cq_entries: 8,
        inflight_max: 64,
        ..RingConfig::default()
    })
    .unwrap();
    assert_eq!(ring.cq_capacity(), 8);
    for tag in 0..64 {
        ring.push(Op::timeout(Duration::from_millis(1)), tag)
            .unwrap();
    }
    let done = wait_for(&mut ring, 64);
    let mut tags: Vec<u64> = done.iter().map(|c| c.tag).collect();
    tags.sort_unstable();
    assert_eq!(tags, (0..64).collect::<Vec<_>>());
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn write_appends_to_a_file() {
    let Some(_) = features() else { return };
    let mut ring = ring();
    let path = std::env::temp_dir().join(format!("uring-write-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    for part in [&b"first "[..], b"second"] {
        let op = Op::Write {
            fd: file.as_raw_fd(),
            buf: part.to_vec(),
            offset: u64::MAX,
        };
        ring.push(op, 1).unwrap();
        let done = wait_for(&mut ring, 1);
        assert_eq!(done[0].result as usize, part.len());
        assert!(matches!(&done[0].owned, Owned::Buf(b) if b == part));
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"first second");
    std::fs::remove_file(&path).unwrap();
}

/// The socket inode of the server side of the loopback connection from `client` to port
/// `server_port`, from `/proc/net/tcp`.
fn server_side_inode(client: &TcpStream, server_port: u16) -> u64 {
    let client_port = client.local_addr().unwrap().port();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next().unwrap(), 16).unwrap();
        if port(fields[1]) == server_port && port(fields[2]) == client_port {
            return fields[9].parse().unwrap();
        }
    }
    panic!("no server side for client port {client_port} in /proc/net/tcp");
}

/// Whether any descriptor of this process is the socket with `inode`.
fn has_descriptor_for(inode: u64) -> bool {
    let wanted = format!("socket:[{inode}]");
    std::fs::read_dir("/proc/self/fd").unwrap().any(|e| {
        std::fs::read_link(e.unwrap().path()).is_ok_and(|t| t.to_str() == Some(wanted.as_str()))
    })
}

#[test]
fn direct_descriptors_serve_a_connection_without_a_process_descriptor() {
    let Some(features) = features() else { return };
    if !features.direct_accept || !features.socket_cmd {
        eprintln!("skipped: kernel lacks direct accept or socket commands (Linux 6.7)");
        return;
    }
    let mut ring = ring();
    ring.register_direct_table(4).unwrap();
    assert_eq!(ring.direct_slots(), 4);
    ring.register_buf_ring(BufRing::new(1, 8, 64).unwrap())
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let accept = Op::AcceptMulti {
        fd: listener.as_raw_fd(),
        direct: true,
    };
    let accept = ring.push(accept, 1).unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let done = wait_for(&mut ring, 1);
    let index = u32::try_from(done[0].result).expect("an index, not an error");
    assert!(index < 4, "slot {index} of a 4-slot table");
    assert!(done[0].more());
    let fd = Desc::Direct(index);
    // The connection lives in the ring's table only.
    let inode = server_side_inode(&client, listener.local_addr().unwrap().port());
    assert!(
        !has_descriptor_for(inode),
        "a direct accept made a process descriptor"
    );

    // Receive and send through the table.
    let recv = ring.push(Op::RecvMulti { fd, group: 1 }, 2).unwrap();
    client.write_all(b"ping").unwrap();
    let done = wait_for(&mut ring, 1);
    let bid = done[0].buffer_id().expect("a buffer");
    assert_eq!(ring.buffer(1, bid, done[0].result as usize), b"ping");
    ring.give_back(1, bid);
    let send = Op::Send {
        fd,
        buf: b"pong".to_vec(),
        offset: 0,
        more: false,
    };
    ring.push(send, 3).unwrap();
    let done = wait_for(&mut ring, 1);
    assert_eq!(done[0].result, 4);
    let mut pong = [0u8; 4];
    client.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"pong");

    // SO_LINGER {on, 0} through the ring; then the receive ends and the slot is closed:
    // the peer is reset.
    let linger = [1i32.to_ne_bytes(), 0i32.to_ne_bytes()].concat();
    let option = Op::SetSockOpt {
        fd,
        level: libc::SOL_SOCKET,
        name: libc::SO_LINGER,
        value: linger,
    };
    ring.push(option, 4).unwrap();
    let done = wait_for(&mut ring, 1);
    assert_eq!(done[0].result, 0, "setsockopt through the ring");
    ring.push(Op::Cancel { target: recv }, 6).unwrap();
    ring.push(Op::Close { fd }, 5).unwrap();
    let done = wait_for(&mut ring, 3);
    let close = done.iter().find(|c| c.tag == 5).unwrap();
    assert_eq!(close.result, 0);
    let mut rest = Vec::new();
    let err = client
        .read_to_end(&mut rest)
        .expect_err("a reset, not an end of stream");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);

    // The slot is free again: the next connection may take it.
    let _next = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let done = wait_for(&mut ring, 1);
    assert!((0..4).contains(&done[0].result), "{}", done[0].result);
    ring.push(Op::Cancel { target: accept }, 7).unwrap();
    wait_for(&mut ring, 2);
}

#[test]
fn a_full_direct_table_refuses_the_accept() {
    let Some(features) = features() else { return };
    if !features.direct_accept {
        eprintln!("skipped: kernel lacks direct accept");
        return;
    }
    let mut ring = ring();
    ring.register_direct_table(1).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _a = TcpStream::connect(addr).unwrap();
    let _b = TcpStream::connect(addr).unwrap();
    for tag in [1, 2] {
        let accept = Op::Accept {
            fd: listener.as_raw_fd(),
            direct: true,
        };
        ring.push(accept, tag).unwrap();
    }
    let done = wait_for(&mut ring, 2);
    let mut results: Vec<i32> = done.iter().map(|c| c.result).collect();
    results.sort();
    assert_eq!(results, [-libc::ENFILE, 0], "one slot, two accepts");
    // A second table is refused.
    let again = ring.register_direct_table(1).unwrap_err();
    assert_eq!(again.raw_os_error(), Some(libc::EBUSY));
}

#[test]
fn socket_out_queue_counts_what_the_peer_has_not_taken() {
    let Some(features) = features() else { return };
    if !features.direct_accept || !features.socket_cmd {
        eprintln!("skipped: kernel lacks direct accept or socket commands");
        return;
    }
    let mut ring = ring();
    ring.register_direct_table(4).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let accept = Op::Accept {
        fd: listener.as_raw_fd(),
        direct: true,
    };
    ring.push(accept, 1).unwrap();
    let fd = Desc::Direct(wait_for(&mut ring, 1)[0].result as u32);
    let queued = |ring: &mut Ring| {
        ring.push(Op::SocketOutQueue { fd }, 2).unwrap();
        wait_for(ring, 1)[0].result
    };
    assert_eq!(queued(&mut ring), 0, "nothing sent yet");
    // A peer that does not read: the send stops when the buffers are full, and what it took
    // waits in the queue, unacknowledged or unsent.
    let send = Op::Send {
        fd,
        buf: vec![7u8; 16 << 20],
        offset: 0,
        more: false,
    };
    ring.push(send, 3).unwrap();
    let sent = wait_for(&mut ring, 1)[0].result;
    assert!(sent > 0 && sent < 16 << 20, "a partial send: {sent}");
    let waiting = queued(&mut ring);
    assert!(
        waiting > 0 && waiting <= sent,
        "{waiting} of {sent} bytes waiting"
    );
    // Once the peer took everything, nothing waits.
    let mut got = vec![0u8; sent as usize];
    client.read_exact(&mut got).unwrap();
    let deadline = Instant::now() + WAIT_MAX;
    while queued(&mut ring) != 0 {
        assert!(Instant::now() < deadline, "the queue never emptied");
    }
    // A plain descriptor answers the same through the ring.
    let (_peer, server) = connected_pair();
    let plain = Desc::Plain(server.as_raw_fd());
    ring.push(Op::SocketOutQueue { fd: plain }, 4).unwrap();
    assert_eq!(wait_for(&mut ring, 1)[0].result, 0);
}

#[test]
fn connect_open_beneath_statx_and_read_at() {
    if features().is_none() {
        return;
    }
    let mut ring = ring();
    // Connect to a listener.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // SAFETY (test): socket(2) with constant arguments; the descriptor is owned below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(raw >= 0);
    // SAFETY (test): `raw` is a new descriptor of this process, owned by nothing else.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    let op = Op::Connect {
        fd: socket.as_raw_fd(),
        addr: Box::new(ringmaster_uring::SockAddr::from_std(addr)),
    };
    ring.push(op, 1).unwrap();
    let done = wait_for(&mut ring, 1);
    assert_eq!(done[0].result, 0, "connected");
    let (mut peer, _) = listener.accept().unwrap();
    // SAFETY (test): `socket` is a connected socket; the buffer outlives the call.
    let sent = unsafe { libc::send(socket.as_raw_fd(), b"hi".as_ptr().cast(), 2, 0) };
    assert_eq!(sent, 2);
    let mut got = [0u8; 2];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hi");

    // A directory with a file, opened beneath it; a path out of it is refused.
    let dir = std::env::temp_dir().join(format!("uring-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f"), b"0123456789").unwrap();
    let root = std::fs::File::open(&dir).unwrap();
    let open = |path: &str| Op::OpenAt2 {
        dirfd: root.as_raw_fd(),
        open: Box::new(ringmaster_uring::OpenArgs {
            path: std::ffi::CString::new(path).unwrap(),
            how: io_uring::types::OpenHow::new()
                .flags((libc::O_RDONLY | libc::O_CLOEXEC) as u64)
                .resolve(libc::RESOLVE_BENEATH),
        }),
    };
    ring.push(open("f"), 2).unwrap();
    ring.push(open("../f"), 3).unwrap();
    let mut done = wait_for(&mut ring, 2);
    done.sort_by_key(|c| c.tag);
    assert!(done[0].result >= 0, "opened: {}", done[0].result);
    assert_eq!(done[1].result, -libc::EXDEV, "a path out of the root");
    // SAFETY (test): the kernel gave this descriptor to this process.
    let file =
        unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(done[0].result) };

    // Its size, and four bytes at offset 3.
    let stat = Op::Statx {
        dirfd: file.as_raw_fd(),
        // SAFETY (test): all zeroes is a valid `statx`.
        stat: Box::new(ringmaster_uring::StatxArgs {
            path: std::ffi::CString::new("").unwrap(),
            flags: libc::AT_EMPTY_PATH,
            mask: libc::STATX_SIZE,
            buf: unsafe { std::mem::zeroed() },
        }),
    };
    ring.push(stat, 4).unwrap();
    ring.push(
        Op::ReadAt {
            fd: file.as_raw_fd(),
            buf: Vec::with_capacity(4),
            offset: 3,
        },
        5,
    )
    .unwrap();
    let mut done = wait_for(&mut ring, 2);
    done.sort_by_key(|c| c.tag);
    let Owned::Statx(stat) = std::mem::take(&mut done[0].owned) else {
        panic!("a statx hands its buffer back")
    };
    assert_eq!((done[0].result, stat.buf.stx_size), (0, 10));
    let Owned::Buf(read) = std::mem::take(&mut done[1].owned) else {
        panic!("a read hands its buffer back")
    };
    assert_eq!(read, b"3456");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The address in a `sockaddr_in` or `sockaddr_in6` the kernel wrote.
fn sockaddr_of(bytes: &[u8]) -> std::net::SocketAddr {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    let family = u16::from_ne_bytes([bytes[0], bytes[1]]);
    let port = u16::from_be_bytes([bytes[2], bytes[3]]);
    match i32::from(family) {
        libc::AF_INET => {
            let ip: [u8; 4] = bytes[4..8].try_into().unwrap();
            SocketAddr::from((Ipv4Addr::from(ip), port))
        }
        libc::AF_INET6 => {
            let ip: [u8; 16] = bytes[8..24].try_into().unwrap();
            SocketAddr::from((Ipv6Addr::from(ip), port))
        }
        other => panic!("family {other}"),
    }
}

/// Accepts one connection of `listener` as a direct descriptor.
fn accept_direct(ring: &mut Ring, listener: &TcpListener) -> Desc {
    let accept = Op::Accept {
        fd: listener.as_raw_fd(),
        direct: true,
    };
    ring.push(accept, 100).unwrap();
    let done = wait_for(ring, 1);
    Desc::Direct(u32::try_from(done[0].result).expect("an index, not an error"))
}

fn peer_name(ring: &mut Ring, fd: Desc, room: usize) -> (i32, Vec<u8>) {
    let op = Op::GetSockOpt {
        fd,
        level: libc::SOL_SOCKET,
        name: libc::SO_PEERNAME,
        value: vec![0xAA; room],
    };
    ring.push(op, 101).unwrap();
    let done = wait_for(ring, 1).pop().unwrap();
    let Owned::Buf(value) = done.owned else {
        panic!("a socket option read hands its buffer back")
    };
    (done.result, value)
}

#[test]
fn get_sock_opt_reads_the_peer_name_into_room_of_the_address_size() {
    let Some(features) = features() else { return };
    if !features.direct_accept || !features.socket_cmd {
        eprintln!("skipped: kernel lacks direct accept or socket commands (Linux 6.7)");
        return;
    }
    let mut ring = ring();
    ring.register_direct_table(8).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let fd = accept_direct(&mut ring, &listener);
    // `sockaddr_in`'s size: the address, and the result is that length.
    let (result, value) = peer_name(&mut ring, fd, 16);
    assert_eq!(result, 16);
    assert_eq!(value.len(), 16);
    assert_eq!(sockaddr_of(&value), client.local_addr().unwrap());
    // More room than the address takes is refused (net/core/sock.c: `lv < len`), and the
    // buffer comes back whole.
    let (result, value) = peer_name(&mut ring, fd, 28);
    assert_eq!(result, -libc::EINVAL);
    assert_eq!(value.len(), 28);
    // Another level than SOL_SOCKET is not answered through the ring.
    let op = Op::GetSockOpt {
        fd,
        level: libc::IPPROTO_TCP,
        name: libc::TCP_NODELAY,
        value: vec![0; 4],
    };
    ring.push(op, 102).unwrap();
    assert_eq!(wait_for(&mut ring, 1)[0].result, -libc::EOPNOTSUPP);
    // A plain descriptor answers the same through the ring.
    let (peer, server) = connected_pair();
    let (result, value) = peer_name(&mut ring, Desc::Plain(server.as_raw_fd()), 16);
    assert_eq!(result, 16);
    assert_eq!(sockaddr_of(&value), peer.local_addr().unwrap());

    // IPv6: `sockaddr_in6`'s size.
    let Ok(listener6) = TcpListener::bind("[::1]:0") else {
        eprintln!("skipped the IPv6 part: ::1 cannot be bound here");
        return;
    };
    let client6 = TcpStream::connect(listener6.local_addr().unwrap()).unwrap();
    let fd6 = accept_direct(&mut ring, &listener6);
    let (result, value) = peer_name(&mut ring, fd6, 28);
    assert_eq!(result, 28);
    assert_eq!(sockaddr_of(&value), client6.local_addr().unwrap());
}

/// What a server that needs the client's address relies on: a peer name read pushed before
/// the connection's first receive completes before it, even when the request's bytes are
/// already queued on the socket (the receive then completes as soon as it is issued). The
/// kernel issues entries in queue order and answers a socket option inline, and it flushes
/// completions held for a batch before a multishot receive posts its own.
#[test]
fn a_peer_name_read_pushed_before_a_receive_completes_before_its_data() {
    let Some(features) = features() else { return };
    if !features.direct_accept || !features.socket_cmd || !features.multishot_recv {
        eprintln!("skipped: kernel lacks direct accept, socket commands or multishot recv");
        return;
    }
    for setup in [
        SetupMode::DeferTaskrun,
        SetupMode::CoopTaskrun,
        SetupMode::Plain,
    ] {
        let mut ring: Ring = Ring::new(&RingConfig {
            setup,
            ..RingConfig::default()
        })
        .unwrap();
        ring.register_direct_table(4).unwrap();
        ring.register_buf_ring(BufRing::new(1, 8, 64).unwrap())
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        for round in 0..200 {
            let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            let fd = accept_direct(&mut ring, &listener);
            let op = Op::GetSockOpt {
                fd,
                level: libc::SOL_SOCKET,
                name: libc::SO_PEERNAME,
                value: vec![0; 16],
            };
            ring.push(op, 1).unwrap();
            let recv = ring.push(Op::RecvMulti { fd, group: 1 }, 2).unwrap();
            let done = wait_for(&mut ring, 2);
            let tags: Vec<u64> = done.iter().map(|c| c.tag).collect();
            assert_eq!(tags, [1, 2], "{setup:?}, round {round}: completion order");
            assert_eq!(done[0].result, 16);
            assert_eq!(done[1].result, 18, "the request's bytes");
            ring.give_back(1, done[1].buffer_id().unwrap());
            ring.push(Op::Cancel { target: recv }, 3).unwrap();
            wait_for(&mut ring, 2);
            ring.push(Op::Close { fd }, 4).unwrap();
            wait_for(&mut ring, 1);
        }
    }
}
