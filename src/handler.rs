//! The handler: what every worker runs for each request.

use crate::cluster::WorkerInfo;
use crate::http::{Request, Response};

/// What every worker runs for each request: the counterpart of the callback given to Node's
/// `http.createServer`.
///
/// `handle` fills in `res`; the server frames it (status line, `Date`, `Content-Length`,
/// `Connection`) and sends it. It runs on the worker's only thread, between network
/// operations, so it should not block: a slow handler delays every connection of its worker.
/// A panic in `handle` is caught: the request is answered `500`, its connection closed, the
/// panic logged in one line, and the worker serves on
/// ([`Config::exit_on_panic`](crate::Config::exit_on_panic) makes it end the worker instead, which the master respawns).
///
/// Closures `Fn(&Request, &mut Response)` are handlers.
pub trait Handler: 'static {
    /// Answers one request.
    fn handle(&self, req: &Request<'_>, res: &mut Response);

    /// Runs once in each worker after fork, before it accepts connections: the place for
    /// per-worker set-up (Node: the code after `cluster.isWorker`). An error ends the
    /// worker as misconfigured: it is logged and the slot is not respawned in a loop.
    fn start(&self, worker: &WorkerInfo) -> Result<(), String> {
        let _ = worker;
        Ok(())
    }

    /// Receives a message the master sent with [`Cluster::send`](crate::Cluster::send) or
    /// [`Cluster::broadcast`](crate::Cluster::broadcast)
    /// (Node: `process.on('message')`).
    fn on_message(&self, bytes: &[u8]) {
        let _ = bytes;
    }
}

impl<F> Handler for F
where
    F: Fn(&Request<'_>, &mut Response) + 'static,
{
    fn handle(&self, req: &Request<'_>, res: &mut Response) {
        self(req, res)
    }
}

/// The seed's application: `200 OK`, `text/plain`, `Hello World` for every request. The
/// `ringmaster` binary serves it.
#[derive(Clone, Copy, Debug, Default)]
pub struct HelloWorld;

impl Handler for HelloWorld {
    fn handle(&self, _req: &Request<'_>, res: &mut Response) {
        res.header("Content-Type", "text/plain").body("Hello World");
    }
}
