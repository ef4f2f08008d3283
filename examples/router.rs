//! Routing, Express-like: sync and async routes side by side, route parameters, `404`,
//! `405` with `Allow`, and handlers mounted under a prefix. Run through ringmaster's own
//! command line (`--listen`, `--workers`, ...).
//!
//! ```text
//! cargo run --release --example router -- --listen 127.0.0.1:3000
//! curl localhost:3000/users/7          # user 7
//! curl -X DELETE localhost:3000/users/7 # 405, Allow: GET, POST, HEAD, OPTIONS
//! curl localhost:3000/wait/50          # waited 50 ms on the worker's ring
//! curl 'localhost:3000/api/x?y'        # the mounted handler sees /x?y
//! ```

use ringmaster::{Async, OwnedRequest, Request, Response, Router, Server};
use std::time::Duration;

/// What a mounted handler sees of the target.
fn show_mount(req: &Request<'_>, res: &mut Response) {
    res.body(format!(
        "target={} path={} base={} original={}",
        req.target(),
        req.path(),
        req.base(),
        req.original_target()
    ));
}

fn main() {
    let router = Router::new()
        .get("/", |_: &Request<'_>, res: &mut Response| {
            res.body("home");
        })
        .get("/users/me", |_: &Request<'_>, res: &mut Response| {
            res.body("me");
        })
        .get("/users/:id", |req: &Request<'_>, res: &mut Response| {
            res.body(format!("user {}", req.param("id").unwrap_or("?")));
        })
        .post("/users/:id", |req: &Request<'_>, res: &mut Response| {
            let id = req.param("id").unwrap_or("?");
            let body = String::from_utf8_lossy(req.body());
            res.status(201).body(format!("{id}: {body}"));
        })
        .get("/files/*path", |req: &Request<'_>, res: &mut Response| {
            res.body(format!("file {}", req.param("path").unwrap_or("?")));
        })
        .get(
            "/wait/:ms",
            Async(|req: OwnedRequest| async move {
                let ms: u64 = req.param("ms").and_then(|v| v.parse().ok()).unwrap_or(0);
                ringmaster::rt::sleep(Duration::from_millis(ms)).await;
                let mut res = Response::new();
                res.body(format!("waited {ms} ms for {}", req.path()));
                res
            }),
        )
        .get(
            "/panic-async",
            Async(|_req: OwnedRequest| async move {
                ringmaster::rt::sleep(Duration::from_millis(1)).await;
                panic!("router example: /panic-async requested");
                #[allow(unreachable_code)]
                Response::new()
            }),
        )
        .mount("/sync", show_mount)
        .mount(
            "/api",
            Async(|req: OwnedRequest| async move {
                let mut res = Response::new();
                res.body(format!(
                    "async target={} path={} base={} original={} method={}",
                    req.target(),
                    req.path(),
                    req.base(),
                    req.original_target(),
                    req.method()
                ));
                res
            }),
        )
        .get("/api/status", |_: &Request<'_>, res: &mut Response| {
            res.body("a route under a mount wins");
        });
    std::process::exit(ringmaster::cli::run(
        ringmaster::app!(),
        Server::new(router),
    ));
}
