//! An application with its own name and version on ringmaster's command line: `--help`,
//! `--version` and its errors say `myapp`, the defaults `--help` shows are its own, and
//! `myapp status` finds the server `myapp` started (on its own default address, not
//! ringmaster's 0.0.0.0:3000).
//!
//! ```text
//! cargo run --release --example app            # listens on 127.0.0.1:23240
//! cargo run --release --example app -- status  # talks to it
//! ```
//!
//! A real application writes `ringmaster::app!()`, which takes its name and version from its
//! own `Cargo.toml`; this example, inside the ringmaster package, names itself. Its default
//! port can be moved with `MYAPP_PORT`, the app's own setting, so that tests run it on a free
//! one.

use ringmaster::cli::App;
use ringmaster::{Request, Response, Server, Workers};

fn main() {
    let port: u16 = std::env::var("MYAPP_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(23240);
    let server = Server::new(|_: &Request<'_>, res: &mut Response| {
        res.header("Content-Type", "text/plain").body("myapp\n");
    })
    .listen(([127, 0, 0, 1], port).into())
    .workers(Workers::Count(1));
    let app = App::new("myapp", "2.3.4").about("the example application (answers `myapp`)");
    std::process::exit(ringmaster::cli::run(app, server));
}
