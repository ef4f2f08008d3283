//! Static files from the command line (`--static PREFIX=DIR`), over real sockets.

mod common;

use common::{
    connect, exchange, get_with, read_response, wait_until, worker_stat, Server, TempDir,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

fn serve(mounts: &[String]) -> Server {
    let mut args = vec!["--workers", "1"];
    for m in mounts {
        args.extend(["--static", m.as_str()]);
    }
    Server::start(&args)
}

fn get(target: &str, fields: &[&str]) -> Vec<u8> {
    get_with("t", target, fields)
}

/// Writes the standard files: `a.txt`, `app.js` with a `.gz` beside it, `docs/index.html`,
/// an empty directory, and a symbolic link out of the root.
fn standard(root: &TempDir, outside: &Path) {
    root.write("a.txt", b"hello file\n");
    root.write("app.js", b"console.log(1)\n");
    root.write("app.js.gz", b"GZIPPED");
    root.write("docs/index.html", b"<h1>docs</h1>\n");
    std::fs::create_dir_all(root.path("empty")).unwrap();
    std::os::unix::fs::symlink(outside, root.path("out")).unwrap();
}

#[test]
fn files_are_served_with_type_validators_and_index() {
    let root = TempDir::new("static", "serve");
    let secret = TempDir::new("static", "serve-outside");
    let outside = secret.write("secret.txt", b"secret\n");
    standard(&root, &outside);
    let server = serve(&[root.mount_arg("/files")]);
    let (res, _) = exchange(server.addr, &get("/files/a.txt", &[]));
    assert_eq!(
        (res.status, res.body.as_slice()),
        (200, &b"hello file\n"[..])
    );
    assert_eq!(res.header("Content-Type"), Some("text/plain"));
    assert_eq!(res.header("Accept-Ranges"), Some("bytes"));
    assert_eq!(res.header("Vary"), Some("Accept-Encoding"));
    assert!(res.header("ETag").unwrap().starts_with('"'));
    assert!(res.header("Last-Modified").unwrap().ends_with(" GMT"));
    // A directory: its index, a redirect to add the slash, no listing without one.
    let (res, _) = exchange(server.addr, &get("/files/docs/", &[]));
    assert_eq!(
        (res.status, res.body.as_slice()),
        (200, &b"<h1>docs</h1>\n"[..])
    );
    assert_eq!(res.header("Content-Type"), Some("text/html"));
    let (res, _) = exchange(server.addr, &get("/files/docs?x=1", &[]));
    assert_eq!(res.status, 301);
    assert_eq!(res.header("Location"), Some("/files/docs/?x=1"));
    // The mount's own prefix is the root directory: the slash is added the same way.
    let (res, _) = exchange(server.addr, &get("/files", &[]));
    assert_eq!((res.status, res.header("Location")), (301, Some("/files/")));
    assert_eq!(
        exchange(server.addr, &get("/files/empty/", &[])).0.status,
        404
    );
    assert_eq!(
        exchange(server.addr, &get("/files/nope.txt", &[])).0.status,
        404
    );
    // Other methods.
    let (res, _) = exchange(
        server.addr,
        b"POST /files/a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(
        (res.status, res.header("Allow")),
        (405, Some("GET, HEAD, OPTIONS"))
    );
    // HEAD: the head only, with the file's length.
    let mut stream = connect(server.addr);
    stream
        .write_all(b"HEAD /files/a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let res = read_response(&mut BufReader::new(stream), true);
    assert_eq!(
        (res.status, res.header("Content-Length")),
        (200, Some("11"))
    );
    // Outside the mount, Hello World answers.
    assert_eq!(
        exchange(server.addr, &get("/other", &[])).0.body,
        b"Hello World"
    );
}

#[test]
fn no_request_leaves_the_root() {
    let root = TempDir::new("static", "escape");
    let secret = TempDir::new("static", "escape-outside");
    let outside = secret.write("secret.txt", b"secret\n");
    standard(&root, &outside);
    let server = serve(&[root.mount_arg("/files")]);
    let name = secret
        .root()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let attempts = [
        ("/files/../".to_string() + &name + "/secret.txt", 400),
        (format!("/files/%2e%2e/{name}/secret.txt"), 400),
        (format!("/files/%2E%2E/{name}/secret.txt"), 400),
        (format!("/files/.%2e/{name}/secret.txt"), 400),
        (format!("/files/..%2f{name}%2fsecret.txt"), 400),
        ("/files/a.txt%00.html".to_string(), 400),
        ("/files/%zz".to_string(), 400),
        // An absolute path stays beneath the root.
        (format!("/files/{}", outside.display()), 404),
        (format!("/files//{}", outside.display()), 404),
        // A symbolic link that leads out is refused by the kernel (RESOLVE_BENEATH).
        ("/files/out".to_string(), 404),
    ];
    for (target, status) in attempts {
        let (res, _) = exchange(server.addr, &get(&target, &[]));
        assert_eq!(res.status, status, "{target}");
        assert!(
            !String::from_utf8_lossy(&res.body).contains("secret"),
            "{target}"
        );
    }
    // Something that is not a regular file: 403.
    let fifo = root.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    assert_eq!(
        exchange(server.addr, &get("/files/fifo", &[])).0.status,
        403
    );
}

#[test]
fn validators_answer_304_and_ranges_206_or_416() {
    let root = TempDir::new("static", "ranges");
    let body: Vec<u8> = (0..100u8).collect();
    root.write("r.bin", &body);
    let server = serve(&[root.mount_arg("/")]);
    let (res, _) = exchange(server.addr, &get("/r.bin", &[]));
    let etag = res.header("ETag").unwrap().to_string();
    let modified = res.header("Last-Modified").unwrap().to_string();
    let (res, _) = exchange(
        server.addr,
        &get("/r.bin", &[&format!("If-None-Match: {etag}")]),
    );
    assert_eq!(res.status, 304);
    assert!(res.body.is_empty());
    let (res, _) = exchange(
        server.addr,
        &get("/r.bin", &[&format!("If-None-Match: \"x\", W/{etag}")]),
    );
    assert_eq!(res.status, 304);
    let (res, _) = exchange(
        server.addr,
        &get("/r.bin", &[&format!("If-Modified-Since: {modified}")]),
    );
    assert_eq!(res.status, 304);
    let (res, _) = exchange(
        server.addr,
        &get(
            "/r.bin",
            &["If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT"],
        ),
    );
    assert_eq!(res.status, 200);
    let (res, _) = exchange(server.addr, &get("/r.bin", &["If-None-Match: \"other\""]));
    assert_eq!(res.status, 200);
    // Ranges: within, to the end, at the end, past it, the last N, several.
    let cases: [(&str, u16, Option<&str>, std::ops::Range<usize>); 8] = [
        ("bytes=0-9", 206, Some("bytes 0-9/100"), 0..10),
        ("bytes=90-", 206, Some("bytes 90-99/100"), 90..100),
        ("bytes=99-99", 206, Some("bytes 99-99/100"), 99..100),
        ("bytes=95-200", 206, Some("bytes 95-99/100"), 95..100),
        ("bytes=-5", 206, Some("bytes 95-99/100"), 95..100),
        ("bytes=100-", 416, Some("bytes */100"), 0..0),
        ("bytes=150-160", 416, Some("bytes */100"), 0..0),
        ("bytes=0-1,5-6", 200, None, 0..100),
    ];
    for (range, status, content_range, slice) in cases {
        let (res, _) = exchange(server.addr, &get("/r.bin", &[&format!("Range: {range}")]));
        assert_eq!(res.status, status, "{range}");
        assert_eq!(res.header("Content-Range"), content_range, "{range}");
        if status != 416 {
            assert_eq!(res.body, body[slice], "{range}");
        }
    }
    // A 416 carries no representation fields of the file's.
    let (res, _) = exchange(server.addr, &get("/r.bin", &["Range: bytes=500-"]));
    assert_eq!(res.status, 416);
    let types: Vec<_> = res
        .headers
        .iter()
        .filter(|(n, _)| n == "Content-Type")
        .collect();
    assert_eq!(types.len(), 1, "{:?}", res.headers);
    assert_eq!(res.header("Content-Type"), Some("text/plain"));
    // If-Range of another version: the whole file.
    let (res, _) = exchange(
        server.addr,
        &get("/r.bin", &["Range: bytes=0-9", "If-Range: \"old\""]),
    );
    assert_eq!((res.status, res.body.len()), (200, 100));
    let (res, _) = exchange(
        server.addr,
        &get(
            "/r.bin",
            &["Range: bytes=0-9", &format!("If-Range: {etag}")],
        ),
    );
    assert_eq!(res.status, 206);
}

#[test]
fn a_precompressed_variant_is_sent_to_clients_that_take_it() {
    let root = TempDir::new("static", "gzip");
    root.write("app.js", b"console.log(1)\n");
    root.write("app.js.gz", b"GZIPPED");
    root.write("plain.css", b"body{}\n");
    let server = serve(&[root.mount_arg("/")]);
    let (res, _) = exchange(
        server.addr,
        &get("/app.js", &["Accept-Encoding: gzip, deflate"]),
    );
    assert_eq!(res.body, b"GZIPPED");
    assert_eq!(res.header("Content-Encoding"), Some("gzip"));
    assert_eq!(res.header("Content-Type"), Some("text/javascript"));
    assert_eq!(res.header("Vary"), Some("Accept-Encoding"));
    // A range the variant cannot satisfy: 416, not gzip-encoded.
    let (res, _) = exchange(
        server.addr,
        &get("/app.js", &["Accept-Encoding: gzip", "Range: bytes=1000-"]),
    );
    assert_eq!(res.status, 416);
    assert_eq!(res.header("Content-Encoding"), None);
    // Refused with q=0 (any case), or not asked for: the file itself.
    for fields in [
        &["Accept-Encoding: gzip;q=0"][..],
        &["Accept-Encoding: gzip; Q=0"][..],
        &[][..],
    ] {
        let (res, _) = exchange(server.addr, &get("/app.js", fields));
        assert_eq!(res.body, b"console.log(1)\n", "{fields:?}");
        assert_eq!(res.header("Content-Encoding"), None);
    }
    // No variant beside the file: the file itself, for a client that takes gzip.
    let (res, _) = exchange(server.addr, &get("/plain.css", &["Accept-Encoding: gzip"]));
    assert_eq!(res.body, b"body{}\n");
    assert_eq!(res.header("Content-Encoding"), None);
}

#[test]
fn a_changed_file_is_served_changed() {
    let root = TempDir::new("static", "change");
    let path = root.write("c.txt", b"first");
    let server = serve(&[root.mount_arg("/")]);
    assert_eq!(exchange(server.addr, &get("/c.txt", &[])).0.body, b"first");
    std::fs::write(&path, b"second, longer").unwrap();
    wait_until("the new content", || {
        exchange(server.addr, &get("/c.txt", &[])).0.body == b"second, longer"
    });
    // Same length, written within the same second: still seen as a new version.
    let etag = exchange(server.addr, &get("/c.txt", &[]))
        .0
        .header("ETag")
        .unwrap()
        .to_string();
    std::fs::write(&path, b"SECOND, LONGER").unwrap();
    wait_until("the same-size new content", || {
        let res = exchange(server.addr, &get("/c.txt", &[])).0;
        res.body == b"SECOND, LONGER" && res.header("ETag") != Some(etag.as_str())
    });
    std::fs::remove_file(&path).unwrap();
    wait_until("the file gone", || {
        exchange(server.addr, &get("/c.txt", &[])).0.status == 404
    });
}

#[test]
fn a_large_file_streams_and_a_failed_read_closes_the_connection() {
    let root = TempDir::new("static", "large");
    let big: Vec<u8> = (0..(3 << 20)).map(|i: u32| (i % 251) as u8).collect();
    let path = root.write("big.bin", &big);
    let server = serve(&[root.mount_arg("/")]);
    let (res, _) = exchange(server.addr, &get("/big.bin", &[]));
    assert_eq!(res.status, 200);
    assert!(res.body == big, "the whole file, byte for byte");
    // A file that shrinks while it is sent: the promised length cannot be kept, so the
    // connection closes short of it.
    let huge = vec![7u8; 64 << 20];
    std::fs::write(&path, &huge).unwrap();
    wait_until("the new length", || {
        let mut s = connect(server.addr);
        s.write_all(b"HEAD /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        read_response(&mut BufReader::new(s), true).header("Content-Length") == Some("67108864")
    });
    let mut stream = connect(server.addr);
    stream.write_all(&get("/big.bin", &[])).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
        line.clear();
    }
    let mut first = vec![0u8; 1 << 20];
    reader.read_exact(&mut first).unwrap();
    std::fs::File::create(&path).unwrap().set_len(0).unwrap();
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(
        first.len() + rest.len() < huge.len(),
        "closed after {} of {} bytes",
        first.len() + rest.len(),
        huge.len()
    );
}

#[test]
fn a_bad_static_flag_is_refused_at_start() {
    let missing = std::env::temp_dir().join("ringmaster-static-no-such-dir");
    for arg in [
        format!("/x={}", missing.display()),
        "x=/tmp".to_string(),
        "/x=".to_string(),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmaster"))
            .args(["--static", &arg, "--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--static {arg}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--static"), "{arg}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn large_files_go_by_splice_in_order_and_the_pipes_come_back() {
    let root = TempDir::new("static", "splice");
    let big: Vec<u8> = (0..(3 << 20) + 123).map(|i: u32| (i % 253) as u8).collect();
    let mid: Vec<u8> = (0..100_000).map(|i: u32| (i % 241) as u8).collect();
    root.write("big.bin", &big);
    root.write("mid.bin", &mid);
    root.write("small.txt", b"small\n");
    let server = serve(&[root.mount_arg("/")]);
    // Pipelined on one connection: spliced bodies and a small one from memory, in order.
    let mut stream = connect(server.addr);
    let mut batch = get("/big.bin", &[]);
    batch.extend(get("/small.txt", &[]));
    batch.extend(get("/mid.bin", &["Range: bytes=1000-"]));
    batch.extend(get("/big.bin", &["Range: bytes=-5000"]));
    stream.write_all(&batch).unwrap();
    let mut reader = BufReader::new(stream);
    let res = read_response(&mut reader, false);
    assert!(res.status == 200 && res.body == big, "the whole big file");
    let res = read_response(&mut reader, false);
    assert_eq!(res.body, b"small\n");
    let res = read_response(&mut reader, false);
    assert!(
        res.status == 206 && res.body == mid[1000..],
        "a range of the middle file"
    );
    let res = read_response(&mut reader, false);
    assert!(res.status == 206 && res.body == big[big.len() - 5000..]);
    // The spliced bytes are counted, and every pipe went back to the pool.
    let spliced = (big.len() + mid.len() - 1000) as u64;
    wait_until("the spliced bytes reported", || {
        worker_stat(&server, "bytes_spliced") >= spliced
    });
    wait_until("the pipes given back", || {
        worker_stat(&server, "splice_pipes") == 0
    });
    // The connection serves on.
    reader.get_mut().write_all(&get("/small.txt", &[])).unwrap();
    assert_eq!(read_response(&mut reader, false).body, b"small\n");
}

#[test]
fn clients_that_do_not_read_hold_at_most_the_pool_and_others_are_served() {
    const POOL: u64 = ringmaster::rt::SPLICE_PIPES_MAX as u64;
    let root = TempDir::new("static", "splice-slow");
    let huge: Vec<u8> = (0..(24 << 20)).map(|i: u32| (i % 239) as u8).collect();
    root.write("huge.bin", &huge);
    let server = serve(&[root.mount_arg("/")]);
    // More clients than pipes ask for the file and never read: each spliced one blocks
    // in the kernel on its full socket, holding its pipe.
    let stalled: Vec<_> = (0..POOL + 6)
        .map(|_| {
            let mut s = connect(server.addr);
            s.write_all(&get("/huge.bin", &[])).unwrap();
            s
        })
        .collect();
    wait_until("the pool in use", || {
        worker_stat(&server, "splice_pipes") == POOL
    });
    // With no pipe free, another client is served all the same (read and sent).
    let (res, _) = exchange(server.addr, &get("/huge.bin", &[]));
    assert!(res.status == 200 && res.body == huge, "the whole file");
    assert_eq!(
        worker_stat(&server, "splice_pipes"),
        POOL,
        "never past the bound"
    );
    // The stalled clients go away: their splices are cancelled and the pipes come back.
    drop(stalled);
    wait_until("the pipes given back", || {
        worker_stat(&server, "splice_pipes") == 0
    });
    let (res, _) = exchange(server.addr, &get("/huge.bin", &["Range: bytes=0-99999"]));
    assert!(res.status == 206 && res.body == huge[..100_000]);
}
