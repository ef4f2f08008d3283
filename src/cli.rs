//! The command line: parses flags into a [`Config`] and runs the server. Every usage error
//! is one line on stderr and exit code 2.

use clap::{Args, Parser, Subcommand};
use ringmaster::{Config, ErrorKind, HelloWorld, Limits, Server, UringOptions, Workers};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Exit code for a usage or start-up error.
const EXIT_USAGE: i32 = 2;
/// Exit code when the server started but could not keep running (every worker failed).
const EXIT_FAILED: i32 = 1;

/// Node's cluster + http for Linux: a master forks one worker per CPU, pins it there, and
/// every worker serves HTTP/1.1 through its own io_uring.
#[derive(Parser, Debug)]
#[command(name = "ringmaster", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve HTTP (what ringmaster does when no command is given).
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on: IP:PORT, [IPv6]:PORT, or a bare PORT (on 0.0.0.0). Port 0
    /// picks a free port; the log says which.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:3000", value_parser = parse_listen)]
    listen: SocketAddr,
    /// Number of workers, or `auto` for one per CPU this process may run on.
    #[arg(long, value_name = "N|auto", default_value = "auto", value_parser = parse_workers)]
    workers: Workers,
    /// Seconds a graceful shutdown waits for requests in flight before killing workers.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs, allow_negative_numbers = true)]
    drain_timeout: Duration,
    /// Listen backlog (capped by the kernel's net.core.somaxconn).
    #[arg(long, value_name = "N", default_value_t = Config::default().backlog)]
    backlog: u32,
    /// Open connections per worker; at the bound a worker stops accepting.
    #[arg(long, value_name = "N", default_value_t = Limits::default().connections_max)]
    connections_max: u32,
    /// Longest request line in bytes (longer: 414).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().request_line_bytes_max)]
    request_line_bytes_max: u32,
    /// Largest header section in bytes (larger: 431).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().request_fields_bytes_max)]
    request_fields_bytes_max: u32,
    /// Largest request body in bytes (larger: 413).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().request_body_bytes_max)]
    request_body_bytes_max: u32,
    /// Provided receive buffers per worker (a power of two).
    #[arg(long, value_name = "N", default_value_t = UringOptions::default().recv_buffers)]
    recv_buffers: u16,
    /// Bytes per provided receive buffer.
    #[arg(long, value_name = "BYTES", default_value_t = UringOptions::default().recv_buffer_bytes)]
    recv_buffer_bytes: u32,
    /// Do not set up rings with SINGLE_ISSUER + DEFER_TASKRUN (use COOP_TASKRUN).
    #[arg(long)]
    uring_no_defer_taskrun: bool,
    /// Arm one single-shot accept per connection instead of one multishot accept.
    #[arg(long)]
    uring_no_multishot_accept: bool,
    /// Arm one single-shot receive per read instead of one multishot receive per connection.
    #[arg(long)]
    uring_no_multishot_recv: bool,
    /// Do not register the ring's descriptor (each io_uring_enter looks it up).
    #[arg(long)]
    uring_no_registered_ring: bool,
}

impl ServeArgs {
    fn config(&self) -> Config {
        Config {
            listen: self.listen,
            workers: self.workers,
            backlog: self.backlog,
            drain_timeout: self.drain_timeout,
            limits: Limits {
                connections_max: self.connections_max,
                request_line_bytes_max: self.request_line_bytes_max,
                request_fields_bytes_max: self.request_fields_bytes_max,
                request_body_bytes_max: self.request_body_bytes_max,
            },
            uring: UringOptions {
                defer_taskrun: !self.uring_no_defer_taskrun,
                multishot_accept: !self.uring_no_multishot_accept,
                multishot_recv: !self.uring_no_multishot_recv,
                registered_ring_fd: !self.uring_no_registered_ring,
                recv_buffers: self.recv_buffers,
                recv_buffer_bytes: self.recv_buffer_bytes,
            },
        }
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        }
    }
    s.parse().map_err(|_| {
        "expected IP:PORT (like 0.0.0.0:3000 or [::1]:8080) or a port number".to_string()
    })
}

fn parse_workers(s: &str) -> Result<Workers, String> {
    if s == "auto" {
        return Ok(Workers::Auto);
    }
    match s.parse::<u32>() {
        Ok(n) if (1..=Config::WORKERS_MAX).contains(&n) => Ok(Workers::Count(n)),
        _ => Err(format!(
            "expected `auto` or a number from 1 to {}",
            Config::WORKERS_MAX
        )),
    }
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=3600.0).contains(&secs) => {
            Ok(Duration::from_secs_f64(secs))
        }
        _ => Err("expected seconds from 0 to 3600".to_string()),
    }
}

/// Runs the command line; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind as K;
            if matches!(e.kind(), K::DisplayHelp | K::DisplayVersion) {
                let _ = e.print();
                return 0;
            }
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("ringmaster: error: {first}; see `ringmaster --help`");
            return EXIT_USAGE;
        }
    };
    let args = match &cli.command {
        Some(Command::Serve(args)) => args,
        None => &cli.serve,
    };
    match Server::new(HelloWorld).config(args.config()).run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ringmaster: error: {e}");
            if e.kind() == ErrorKind::WorkersFailed {
                EXIT_FAILED
            } else {
                EXIT_USAGE
            }
        }
    }
}
