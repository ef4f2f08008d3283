//! The library in use: a handler of your own, run by every worker.
//!
//! ```text
//! cargo run --release --example hello -- 127.0.0.1:3000
//! curl localhost:3000/            # Hello World
//! curl -d 'some bytes' localhost:3000/echo
//! ```

use ringmaster::{Request, Response, Server, Workers};

fn main() {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_string());
    let Ok(listen) = listen.parse() else {
        eprintln!("hello: error: {listen:?} is not IP:PORT; try 127.0.0.1:3000");
        std::process::exit(2);
    };
    let result = Server::new(|req: &Request<'_>, res: &mut Response| match req.path() {
        "/" => {
            res.header("Content-Type", "text/plain").body("Hello World");
        }
        "/echo" => {
            res.header("Content-Type", "application/octet-stream")
                .body(req.body());
        }
        _ => {
            res.status(404).body("not found\n");
        }
    })
    .listen(listen)
    .workers(Workers::Count(2))
    .run();
    if let Err(e) = result {
        eprintln!("hello: error: {e}");
        std::process::exit(2);
    }
}
