//! The library API, through `examples/hello.rs` (a handler of the user's own) run as a
//! real process: the test process itself is multi-threaded and must not fork a server.

mod common;

use common::{closed_by_server, example, exchange, Server};
use std::process::Command;

#[test]
fn a_user_handler_routes_and_reads_bodies() {
    let server = Server::start_command(Command::new(example("hello")).arg("127.0.0.1:0"), 2);
    let (res, _) = exchange(server.addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(res.body, b"Hello World");
    let (res, _) = exchange(
        server.addr,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nsome bytes",
    );
    assert_eq!(res.status, 200);
    assert_eq!(res.body, b"some bytes");
    let (res, mut reader) = exchange(
        server.addr,
        b"GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(res.status, 404);
    assert!(closed_by_server(&mut reader));
}
