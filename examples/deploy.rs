//! A server whose answer is the version marked in its own binary, for deploying new builds
//! with `ringmaster reload`: the tests copy this binary and patch its mark (`v1` → `v2`, …)
//! to stand for a new build put at the same path. Mark `v3` exits at start-up; mark `v4`'s
//! handler fails to start.
//!
//! ```text
//! cargo run --release --example deploy -- --listen 127.0.0.1:3000
//! curl localhost:3000/            # v1
//! ```

use ringmaster::{Handler, Request, Response, Server, WorkerInfo, Workers};

/// The mark: the last two bytes are the version. Read through a volatile load, so that the
/// bytes answered are the binary's own, patched or not, never a constant the compiler kept.
static MARK: [u8; 26] = *b"RINGMASTER_DEPLOY_MARK==v1";

fn version() -> String {
    // SAFETY: `MARK` is a static, valid for reads, of the type read.
    let mark = unsafe { std::ptr::read_volatile(&MARK) };
    String::from_utf8_lossy(&mark[24..]).into_owned()
}

struct Versioned {
    version: String,
}

impl Handler for Versioned {
    fn handle(&self, _req: &Request<'_>, res: &mut Response) {
        res.header("Content-Type", "text/plain").body(&self.version);
    }

    fn start(&self, _worker: &WorkerInfo) -> Result<(), String> {
        match self.version.as_str() {
            "v4" => Err("v4 cannot start: its handler's set-up fails".to_string()),
            _ => Ok(()),
        }
    }
}

fn main() {
    let version = version();
    if version == "v3" {
        eprintln!("deploy: error: v3 exits at start-up");
        std::process::exit(1);
    }
    // The library's command line, as a user's own binary has it: `--listen`, `--workers`
    // and every other flag, and `reload`, `status`, `scale`... to talk to a running one.
    let server = Server::new(Versioned { version })
        .listen("127.0.0.1:3000".parse().expect("an address"))
        .workers(Workers::Count(2));
    std::process::exit(ringmaster::cli::run(ringmaster::app!(), server));
}
