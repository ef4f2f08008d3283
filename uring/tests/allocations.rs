//! The ring's hot path allocates nothing: pushing receives and sends, entering, reaping
//! and giving buffers back, once the in-flight table and buffers exist.

use ringmaster_uring::{BufRing, Desc, Features, Op, Owned, Ring, RingConfig};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations;

#[test]
fn receive_and_send_round_trips_allocate_nothing() {
    match Features::probe() {
        Ok(f) if f.multishot_recv && f.buf_ring => {}
        other => {
            eprintln!("skipped: no multishot recv with buffer rings here ({other:?})");
            return;
        }
    }
    let mut ring = Ring::new(&RingConfig::default()).unwrap();
    ring.register_buf_ring(BufRing::new(0, 16, 256).unwrap())
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (server, _) = listener.accept().unwrap();
    let fd = Desc::Plain(server.as_raw_fd());
    ring.push(Op::RecvMulti { fd, group: 0 }, 1).unwrap();
    let mut done = Vec::with_capacity(ring.cq_capacity());
    let mut out = Vec::with_capacity(256);
    let mut echo = [0u8; 5];
    let mut round = |ring: &mut Ring, done: &mut Vec<_>, out: &mut Vec<u8>| {
        client.write_all(b"ping!").unwrap();
        // Wait for the receive, echo it with a send, wait for the send.
        let mut sent = false;
        while !sent {
            ring.submit_and_wait_timeout(1, Duration::from_secs(5))
                .unwrap();
            ring.reap(done);
            for c in done.drain(..) {
                match c.tag {
                    1 => {
                        assert!(c.more(), "the multishot receive stays armed");
                        let bid = c.buffer_id().unwrap();
                        out.extend_from_slice(ring.buffer(0, bid, c.result as usize));
                        ring.give_back(0, bid);
                        let buf = std::mem::take(out);
                        ring.push(
                            Op::Send {
                                fd,
                                buf,
                                offset: 0,
                                more: false,
                            },
                            2,
                        )
                        .unwrap();
                    }
                    _ => {
                        let Owned::Buf(mut buf) = c.owned else {
                            panic!()
                        };
                        buf.clear();
                        *out = buf;
                        sent = true;
                    }
                }
            }
        }
        client.read_exact(&mut echo).unwrap();
        assert_eq!(&echo, b"ping!");
    };
    for _ in 0..50 {
        round(&mut ring, &mut done, &mut out);
    }
    let seen = allocations(|| {
        for _ in 0..500 {
            round(&mut ring, &mut done, &mut out);
        }
    });
    // The client side (std's TcpStream) allocates nothing per read or write either.
    assert_eq!(seen, 0);
}
