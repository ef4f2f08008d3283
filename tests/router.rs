//! The router, through `examples/router.rs` run as a real process over real sockets.

mod common;

use common::{closed_by_server, connect, example, exchange, read_response, Server};
use std::io::{BufReader, Write};

fn router() -> Server {
    let mut command = std::process::Command::new(example("router"));
    command.args(["--workers", "1", "--listen", "127.0.0.1:0"]);
    Server::start_command(&mut command, 1)
}

fn req(method: &str, target: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

/// Status and body of `method target` on a new connection.
fn ask(server: &Server, method: &str, target: &str) -> (u16, String) {
    let (res, _) = exchange(server.addr, &req(method, target));
    (res.status, String::from_utf8_lossy(&res.body).into_owned())
}

#[test]
fn routes_match_by_method_and_path_with_parameters() {
    let server = router();
    let cases = [
        ("GET", "/", 200, "home"),
        ("GET", "/users/7", 200, "user 7"),
        ("GET", "/users/7?x=1", 200, "user 7"),
        ("GET", "/users/me", 200, "me"),
        ("GET", "/users/a%20b", 200, "user a%20b"),
        ("GET", "/files/a/b/c.txt", 200, "file a/b/c.txt"),
        ("GET", "/files/", 404, "Not Found\n"),
        ("GET", "/users", 404, "Not Found\n"),
        ("GET", "/nowhere", 404, "Not Found\n"),
        ("GET", "/wait/20", 200, "waited 20 ms for /wait/20"),
    ];
    for (method, target, status, body) in cases {
        assert_eq!(
            ask(&server, method, target),
            (status, body.to_string()),
            "{method} {target}"
        );
    }
    let (res, _) = exchange(
        server.addr,
        b"POST /users/9 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!((res.status, res.body.as_slice()), (201, &b"9: hello"[..]));
}

#[test]
fn a_path_without_the_method_gets_405_with_allow_and_options_gets_204() {
    let server = router();
    let (res, _) = exchange(server.addr, &req("DELETE", "/users/7"));
    assert_eq!(res.status, 405);
    assert_eq!(res.header("Allow"), Some("GET, POST, HEAD, OPTIONS"));
    let (res, _) = exchange(server.addr, &req("OPTIONS", "/users/7"));
    assert_eq!(res.status, 204);
    assert_eq!(res.header("Allow"), Some("GET, POST, HEAD, OPTIONS"));
    // HEAD is answered by the GET route, without the body.
    let mut stream = connect(server.addr);
    stream.write_all(&req("HEAD", "/users/7")).unwrap();
    let res = read_response(&mut BufReader::new(stream), true);
    assert_eq!(res.status, 200);
    assert_eq!(res.header("Content-Length"), Some("6"));
    assert!(res.body.is_empty());
}

#[test]
fn a_mounted_handler_sees_the_target_below_its_prefix() {
    let server = router();
    let cases = [
        ("/sync", "target=/ path=/ base=/sync original=/sync"),
        ("/sync/", "target=/ path=/ base=/sync original=/sync/"),
        (
            "/sync/x/y?q=1",
            "target=/x/y?q=1 path=/x/y base=/sync original=/sync/x/y?q=1",
        ),
        ("/sync?q", "target=?q path=/ base=/sync original=/sync?q"),
        (
            "/api/x?y",
            "async target=/x?y path=/x base=/api original=/api/x?y method=GET",
        ),
        (
            "/api",
            "async target=/ path=/ base=/api original=/api method=GET",
        ),
    ];
    for (target, body) in cases {
        assert_eq!(
            ask(&server, "GET", target),
            (200, body.to_string()),
            "{target}"
        );
    }
    // Every method goes to a mount; a route under it wins; a longer name is not below it.
    assert_eq!(
        ask(&server, "DELETE", "/api/z").1,
        "async target=/z path=/z base=/api original=/api/z method=DELETE"
    );
    assert_eq!(
        ask(&server, "GET", "/api/status").1,
        "a route under a mount wins"
    );
    assert_eq!(ask(&server, "GET", "/apix").0, 404);
    assert_eq!(ask(&server, "GET", "/syncx").0, 404);
}

#[test]
fn sync_and_async_routes_pipelined_on_one_connection_answer_in_order() {
    let server = router();
    let mut stream = connect(server.addr);
    let mut batch = Vec::new();
    for target in [
        "/wait/100",
        "/users/1",
        "/api/a",
        "/nowhere",
        "/wait/1",
        "/",
    ] {
        batch.extend_from_slice(&req("GET", target));
    }
    stream.write_all(&batch).unwrap();
    let mut reader = BufReader::new(stream);
    let got: Vec<(u16, String)> = (0..6)
        .map(|_| {
            let res = read_response(&mut reader, false);
            (res.status, String::from_utf8_lossy(&res.body).into_owned())
        })
        .collect();
    let want = [
        (200, "waited 100 ms for /wait/100"),
        (200, "user 1"),
        (
            200,
            "async target=/a path=/a base=/api original=/api/a method=GET",
        ),
        (404, "Not Found\n"),
        (200, "waited 1 ms for /wait/1"),
        (200, "home"),
    ];
    let want: Vec<(u16, String)> = want.iter().map(|(s, b)| (*s, b.to_string())).collect();
    assert_eq!(got, want);
}

#[test]
fn a_panicking_async_route_answers_500_and_the_router_serves_on() {
    let server = router();
    let (res, mut reader) = exchange(server.addr, &req("GET", "/panic-async"));
    assert_eq!(res.status, 500);
    assert!(closed_by_server(&mut reader));
    server.wait_log("router example: /panic-async requested");
    assert_eq!(ask(&server, "GET", "/users/2"), (200, "user 2".to_string()));
}
