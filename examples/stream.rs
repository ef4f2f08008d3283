//! Bodies that stream: a large generated response produced as the client takes it, and an
//! upload echoed back as it arrives; neither is ever held whole.
//!
//! ```text
//! cargo run --release --example stream -- --listen 127.0.0.1:3000
//! curl -o /dev/null 'localhost:3000/numbers?mb=1024'     # 1 GiB, produced on the fly
//! curl -T big.iso localhost:3000/echo -o copy.iso          # echoed as it arrives
//! ```
//!
//! Request bodies may be as large as `Limits::REQUEST_BODY_BYTES_MAX` (1 GiB) here: they
//! stream, so their size costs no memory. `/numbers?mb=N` writes N MiB of text lines (`Content-Length` set); each write waits
//! while the connection's unsent output is at `--output-bytes-max`. `/echo` reads its
//! body through a [`BodyReader`](ringmaster::BodyReader) and writes each piece back
//! through the response's [`BodyWriter`](ringmaster::BodyWriter), chunked: the client gets
//! its bytes back while it is still sending them.

use ringmaster::{Limits, OwnedRequest, Request, Response, Server, StreamBodies};

async fn handle(mut req: OwnedRequest) -> Response {
    let mut res = Response::new();
    match req.path() {
        "/numbers" => {
            let mb: u64 = req
                .query()
                .and_then(|q| q.strip_prefix("mb="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(16);
            let len = mb << 20;
            res.header("Content-Type", "text/plain").stream(
                Some(len),
                move |mut body| async move {
                    let mut block = Vec::with_capacity(64 * 1024);
                    let (mut sent, mut n) = (0u64, 0u64);
                    while sent < len {
                        block.clear();
                        while block.len() < 64 * 1024 {
                            block.extend_from_slice(format!("{n:015}\n").as_bytes());
                            n += 1;
                        }
                        let take = block.len().min((len - sent) as usize);
                        body.write(&block[..take]).await?;
                        sent += take as u64;
                    }
                    Ok(())
                },
            );
        }
        "/echo" => {
            let Some(mut upload) = req.body_reader() else {
                res.status(400).body("send a body\n");
                return res;
            };
            res.header("Content-Type", "application/octet-stream")
                .stream(None, move |mut body| async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match upload.read(&mut buf).await? {
                            0 => return Ok(()),
                            n => body.write(&buf[..n]).await?,
                        }
                    }
                });
        }
        _ => {
            res.status(404).body("try /numbers?mb=N or /echo\n");
        }
    }
    res
}

fn main() {
    let server = Server::new_async(StreamBodies {
        when: |req: &Request<'_>| req.path() == "/echo",
        handler: handle,
    })
    // Bodies stream here, so the largest a request may have is no memory matter.
    .limits({
        let mut limits = Limits::default();
        limits.request_body_bytes_max = Limits::REQUEST_BODY_BYTES_MAX;
        limits
    });
    std::process::exit(ringmaster::cli::run(ringmaster::app!(), server));
}
