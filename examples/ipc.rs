//! Messages between the master and its workers, the way Node's `cluster` does them: each
//! worker reports how many requests it answered; the master adds them up and broadcasts the
//! cluster-wide total, which every worker serves at `/total`.
//!
//! ```text
//! cargo run --release --example ipc -- --listen 127.0.0.1:3000
//! curl localhost:3000/ ; curl localhost:3000/total
//! ```

use ringmaster::{send_to_master, Handler, Request, Response, Server};
use std::cell::Cell;

/// Report to the master after this many requests.
const REPORT_EVERY: u64 = 100;

#[derive(Default)]
struct Counting {
    unreported: Cell<u64>,
    /// The latest cluster-wide total the master broadcast.
    total: Cell<u64>,
}

impl Handler for Counting {
    fn handle(&self, req: &Request<'_>, res: &mut Response) {
        self.unreported.set(self.unreported.get() + 1);
        if self.unreported.get() >= REPORT_EVERY {
            // process.send({ requests: n }) in Node.
            if send_to_master(&self.unreported.get().to_le_bytes()).is_ok() {
                self.unreported.set(0);
            }
        }
        match req.path() {
            "/total" => res.body(format!("{}\n", self.total.get())),
            _ => res.header("Content-Type", "text/plain").body("Hello World"),
        };
    }

    // process.on('message', ...) in Node.
    fn on_message(&self, bytes: &[u8]) {
        if let Ok(total) = bytes.try_into().map(u64::from_le_bytes) {
            self.total.set(total);
        }
    }
}

fn main() {
    let mut total: u64 = 0;
    let server = Server::new(Counting::default())
        // cluster.on('online', ...)
        .on_online(|_, w| {
            eprintln!(
                "ipc: worker {} online (pid {}, cpu {})",
                w.slot,
                w.pid,
                w.cpu.map_or("none".to_string(), |c| c.to_string())
            )
        })
        // cluster.on('exit', ...)
        .on_exit(|_, w, exit| eprintln!("ipc: worker {} exited: {exit:?}", w.slot))
        // cluster.on('message', ...) and a broadcast to cluster.workers
        .on_message(move |cluster, _, bytes| {
            if let Ok(n) = bytes.try_into().map(u64::from_le_bytes) {
                total += n;
                cluster.broadcast(&total.to_le_bytes());
            }
        });
    std::process::exit(ringmaster::cli::run(ringmaster::app!(), server));
}
