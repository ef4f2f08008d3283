//! The side-by-side benchmark: ringmaster and the peers of `../shared/peers`, each loaded in
//! turn by wrk, round after round, with the CPU time of each server's whole process tree
//! (from `/proc`) charged to the requests it served. Prints medians and ratios, and writes
//! the tables to `target/benchmarks/latest.md`.
//!
//! ```text
//! cargo bench --bench compare -- [--peers floor,nginx,hyper,minihttp,monoio,node,testbed,async]
//!     [--rounds 3] [--duration 10]
//!     [--workloads keepalive,pipelined,close,wait,idle,static1k,static64k,static1m,staticmix,proxy]
//!     [--ablation] [--smoke] [--baseline PATH]
//! ```
//!
//! Peers beyond `../shared/peers`: `floor` (the kernel floor, `floor/floor.c`, built with
//! `cc`; keep-alive and pipelined loads only), `testbed` (ringmaster's testbed example with
//! its sync handler) and `async` (the same with its async handler, `TESTBED_ASYNC=1`), both
//! built in release on first use. The `wait` load (`GET /wait?ms=1` over 1,000 connections:
//! a handler that waits 1 ms on its runtime's timer) runs on the servers that have that
//! path: `async`, `node`, `hyper`; its ratios are against `async` (else the first
//! `async@N`). `NAME@N` runs a peer
//! with N workers or threads (`async@1`, `node@1`, `hyper@1`): on a machine whose cores the
//! load generator shares, a server pinned to every core starves it; with N below the CPU
//! count the server runs on CPUs 0..N and wrk on the rest (`taskset`). `hello` and
//! `hello-async` (the testbed with `TESTBED_HELLO=sync|async`) run the built-in Hello World's
//! code as a sync and as an async handler: the async path's cost, and nothing else.
//!
//! The `proxy` load asks for `/proxy/` from nginx (`proxy_pass` with a keep-alive pool) and
//! from ringmaster (`--proxy /proxy=URL`), both in front of the same upstream: the floor,
//! one unpinned process, outside the servers' process trees (not charged to them).
//!
//! The static loads (`static1k`, `static64k`, `static1m`: one file each; `staticmix`: 20
//! files of 3 to 300 KiB in turn, each with a `.gz`, asked with `Accept-Encoding: gzip`)
//! run on nginx (`/static/`, sendfile, `open_file_cache`, `gzip_static`) and on ringmaster
//! with `--static /static=DIR`; the files are written to `target/benchmarks/static`. With a
//! static load, ringmaster's Hello World loads go through the router's fallback: run them
//! apart.
//!
//! `--baseline PATH` adds another ringmaster binary (an older build, say) as a peer named
//! `baseline`, so that a change to the hot path is measured before and after in one run.
//! The peer `unpinned` is this build with `--cpu-affinity none` (and the same mounts):
//! pinned against unpinned workers in one run. For both, the report adds each round's
//! ratios to the medians.
//!
//! Needs wrk (`apt-get install wrk`); nginx and Node.js for those peers. The Rust peers are
//! built from `../shared/peers/rust` into `target/peers` on first use.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Connections per load, as in the peers' published figures.
const CONNECTIONS: u32 = 64;
/// Requests per write in the pipelined load.
const PIPELINE_DEPTH: u32 = 16;
/// Connections of the `wait` load.
const WAIT_CONNECTIONS: u32 = 1000;
/// Connections held open for the idle-memory measurement.
const IDLE_CONNECTIONS: usize = 10_000;
/// wrk's script for the pipelined load (the peers' `pipeline.lua`): DEPTH requests per
/// write.
const PIPELINE_LUA: &str = r#"init = function(args)
  local depth = tonumber(args[1]) or 1
  local r = {}
  for i = 1, depth do r[i] = wrk.format() end
  req = table.concat(r)
end
request = function() return req end
"#;

/// The longest a server may take to start listening.
const START_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Workload {
    KeepAlive,
    Pipelined,
    Close,
    /// `GET /wait?ms=1` over [`WAIT_CONNECTIONS`]: a handler that waits on a timer.
    Wait,
    Idle,
    /// `GET /static/1k.bin` (and 64k, 1m): one file, keep-alive, 64 conns.
    Static1K,
    Static64K,
    Static1M,
    /// 20 files of 3–300 KiB in turn, each with a `.gz` beside it, `Accept-Encoding: gzip`.
    StaticMix,
    /// `GET /proxy/` through a reverse proxy to a Hello World upstream (the floor, one
    /// unpinned process), keep-alive, 64 conns.
    Proxy,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::KeepAlive => "keep-alive, 64 conns",
            Workload::Pipelined => "pipelined x16, 64 conns",
            Workload::Close => "Connection: close, 64 conns",
            Workload::Wait => "handler waits 1 ms, 1000 conns",
            Workload::Idle => "idle keep-alive memory",
            Workload::Static1K => "static 1 KiB, 64 conns",
            Workload::Static64K => "static 64 KiB, 64 conns",
            Workload::Static1M => "static 1 MiB, 64 conns",
            Workload::StaticMix => "static mix (.gz), 64 conns",
            Workload::Proxy => "proxy to Hello World, 64 conns",
        }
    }

    /// The flag's name, for file names.
    fn slug(self) -> &'static str {
        match self {
            Workload::KeepAlive => "keepalive",
            Workload::Pipelined => "pipelined",
            Workload::Close => "close",
            Workload::Wait => "wait",
            Workload::Idle => "idle",
            Workload::Static1K => "static1k",
            Workload::Static64K => "static64k",
            Workload::Static1M => "static1m",
            Workload::StaticMix => "staticmix",
            Workload::Proxy => "proxy",
        }
    }

    fn is_static(self) -> bool {
        matches!(
            self,
            Workload::Static1K | Workload::Static64K | Workload::Static1M | Workload::StaticMix
        )
    }

    fn parse(s: &str) -> Option<Workload> {
        match s {
            "keepalive" => Some(Workload::KeepAlive),
            "pipelined" => Some(Workload::Pipelined),
            "close" => Some(Workload::Close),
            "wait" => Some(Workload::Wait),
            "idle" => Some(Workload::Idle),
            "static1k" => Some(Workload::Static1K),
            "static64k" => Some(Workload::Static64K),
            "static1m" => Some(Workload::Static1M),
            "staticmix" => Some(Workload::StaticMix),
            "proxy" => Some(Workload::Proxy),
            _ => None,
        }
    }
}

/// A server to measure: how to start it.
#[derive(Clone, Debug)]
struct Server {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Whether it honours `Connection: close` (monoio's raw loop does not).
    closes: bool,
    /// Whether it has `GET /wait?ms=N`.
    waits: bool,
    /// Whether it serves [`static_root`] under `/static/`.
    statics: bool,
    /// Whether it proxies `/proxy/` to the upstream.
    proxies: bool,
    /// `NAME@N` with N below the CPU count: the server runs on CPUs `0..N` and wrk on the
    /// others, so that neither takes the other's core (`taskset`).
    cpus: Option<usize>,
}

impl Server {
    /// Whether it can run `workload`.
    fn runs(&self, workload: Workload) -> bool {
        match workload {
            Workload::Close => self.closes,
            Workload::Wait => self.waits,
            w if w.is_static() => self.statics,
            Workload::Proxy => self.proxies,
            // Only the ringmaster binary has the Hello World loads besides; the testbed
            // variants are run on them too.
            _ => true,
        }
    }
}

impl Server {
    fn start(&self, port: u16) -> Result<Running, String> {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let split = self.cpus.filter(|&n| n < cpus);
        let mut command = match split {
            Some(n) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(format!("0-{}", n - 1)).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in &self.env {
            command.env(k, v.replace("{port}", &port.to_string()));
        }
        // Its own process group, so that stopping it reaches every process it started.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().map_err(|e| {
            format!(
                "{}: cannot start {}: {e}",
                self.name,
                self.program.display()
            )
        })?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + START_WAIT;
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return Err(format!("{} did not listen on {addr}", self.name));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Give forked workers a moment to arm their accepts after the first one listens.
        std::thread::sleep(Duration::from_millis(500));
        let load_cpus = split.map(|n| format!("{n}-{}", cpus - 1));
        Ok(Running {
            child,
            addr,
            load_cpus,
        })
    }
}

struct Running {
    child: Child,
    addr: SocketAddr,
    /// The CPUs wrk runs on, when the server has its own (`NAME@N`).
    load_cpus: Option<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: signals the process group this benchmark created for the server.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// A process and all its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut at = 0;
    while at < all.len() {
        let p = all[at];
        at += 1;
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for task in tasks.flatten() {
                let children = std::fs::read_to_string(task.path().join("children"));
                all.extend(
                    children
                        .unwrap_or_default()
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    all
}

/// CPU time (user + system) of a process tree, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    tree(pid)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .map(|stat| {
            let f: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            ticks(11) + ticks(12)
        })
        .sum::<f64>()
        / hz
}

/// Proportional set size of a process tree, in KiB.
fn pss_kib(pid: u32) -> u64 {
    tree(pid)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}

/// One measured run.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    rps: f64,
    /// Server CPU per request, microseconds.
    cpu_us: f64,
    errors: u64,
}

struct Bench {
    wrk: PathBuf,
    pipeline_lua: PathBuf,
    duration: u32,
}

impl Bench {
    fn wrk(&self, server: &Running, workload: Workload) -> Result<(u64, f64, u64), String> {
        let addr = server.addr;
        let (url, connections) = match workload {
            Workload::Wait => (format!("http://{addr}/wait?ms=1"), WAIT_CONNECTIONS),
            Workload::Static1K => (format!("http://{addr}/static/1k.bin"), CONNECTIONS),
            Workload::Static64K => (format!("http://{addr}/static/64k.bin"), CONNECTIONS),
            Workload::Static1M => (format!("http://{addr}/static/1m.bin"), CONNECTIONS),
            Workload::Proxy => (format!("http://{addr}/proxy/"), CONNECTIONS),
            _ => (format!("http://{addr}/"), CONNECTIONS),
        };
        let mut command = match &server.load_cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(&self.wrk);
                c
            }
            None => Command::new(&self.wrk),
        };
        command.args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{}s", self.duration),
            "--timeout",
            "5s",
        ]);
        match workload {
            Workload::Pipelined => {
                command.arg("-s").arg(&self.pipeline_lua).arg(&url);
                command.args(["--", &PIPELINE_DEPTH.to_string()]);
            }
            Workload::StaticMix => {
                command
                    .arg("-s")
                    .arg(static_root().join("mix.lua"))
                    .arg(&url);
            }
            Workload::Close => {
                command.args(["-H", "Connection: close", &url]);
            }
            _ => {
                command.arg(&url);
            }
        }
        let out = command.output().map_err(|e| format!("running wrk: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let requests = text
            .lines()
            .find(|l| l.contains(" requests in "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| format!("wrk printed no request count:\n{text}"))?;
        let seconds = text
            .lines()
            .find(|l| l.contains(" requests in "))
            .and_then(|l| l.split(" requests in ").nth(1))
            .and_then(|r| r.split(',').next())
            .map(parse_wrk_duration)
            .unwrap_or(f64::from(self.duration));
        let mut errors = 0;
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("Socket errors:") {
                errors += rest
                    .split(',')
                    .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                    .sum::<u64>();
            }
            if let Some(rest) = line.trim().strip_prefix("Non-2xx or 3xx responses:") {
                errors += rest.trim().parse::<u64>().unwrap_or(0);
            }
        }
        Ok((requests, seconds, errors))
    }

    fn measure(&self, server: &Running, workload: Workload) -> Result<Sample, String> {
        let pid = server.child.id();
        let before = cpu_seconds(pid);
        let (requests, seconds, errors) = self.wrk(server, workload)?;
        let cpu = cpu_seconds(pid) - before;
        Ok(Sample {
            rps: requests as f64 / seconds,
            cpu_us: cpu * 1e6 / requests.max(1) as f64,
            errors,
        })
    }
}

fn parse_wrk_duration(s: &str) -> f64 {
    let s = s.trim();
    if let Some(v) = s.strip_suffix("ms") {
        v.parse::<f64>().unwrap_or(0.0) / 1000.0
    } else if let Some(v) = s.strip_suffix('s') {
        v.parse().unwrap_or(0.0)
    } else if let Some(v) = s.strip_suffix('m') {
        v.parse::<f64>().unwrap_or(0.0) * 60.0
    } else {
        0.0
    }
}

/// Opens `count` connections, each answering one request, holds them, and returns the
/// growth of the server's PSS per connection in bytes.
fn idle_memory(server: &Running, count: usize) -> Result<f64, String> {
    raise_nofile(count as u64 + 1024);
    let pid = server.child.id();
    // Warm the server up first, so that lazily built state is in the baseline. Each
    // connection reads its one response and is dropped (some peers ignore
    // `Connection: close`, so nothing waits for the server to close).
    for _ in 0..200 {
        let s = TcpStream::connect(server.addr).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut r = BufReader::new(s);
        r.get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            .map_err(|e| e.to_string())?;
        read_one_response(&mut r).map_err(|e| format!("warm-up: {e}"))?;
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = pss_kib(pid);
    let mut held = Vec::with_capacity(count);
    for i in 0..count {
        let s = TcpStream::connect(server.addr)
            .map_err(|e| format!("connection {i} of {count}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut r = BufReader::new(s);
        r.get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            .map_err(|e| e.to_string())?;
        read_one_response(&mut r).map_err(|e| format!("connection {i}: {e}"))?;
        held.push(r);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = pss_kib(pid);
    drop(held);
    Ok((after.saturating_sub(before) * 1024) as f64 / count as f64)
}

fn read_one_response(r: &mut BufReader<TcpStream>) -> std::io::Result<()> {
    let mut len = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)
}

fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// The Rust peers' binaries, built on first use from a copy of their sources.
fn rust_peers(peers_dir: &Path, target: &Path) -> Result<PathBuf, String> {
    let release = target.join("release");
    if ["hyper", "minihttp", "monoio"]
        .iter()
        .all(|b| release.join(b).is_file())
    {
        return Ok(release);
    }
    let src = target.join("src");
    std::fs::create_dir_all(src.join("src/bin")).map_err(|e| e.to_string())?;
    let manifest = std::fs::read_to_string(peers_dir.join("rust/Cargo.toml"))
        .map_err(|e| format!("reading the peers' manifest: {e}"))?;
    // Its own workspace: the copy lives under this project's target folder.
    std::fs::write(src.join("Cargo.toml"), manifest + "\n[workspace]\n")
        .map_err(|e| format!("copying the peers: {e}"))?;
    for bin in ["hyper", "minihttp", "monoio"] {
        std::fs::copy(
            peers_dir.join(format!("rust/src/bin/{bin}.rs")),
            src.join(format!("src/bin/{bin}.rs")),
        )
        .map_err(|e| format!("copying the peers: {e}"))?;
    }
    eprintln!("building the Rust peers into {} (once)", target.display());
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet"])
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", target)
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err("building the Rust peers failed".into());
    }
    Ok(release)
}

struct Args {
    peers: Vec<String>,
    rounds: u32,
    duration: u32,
    workloads: Vec<Workload>,
    ablation: bool,
    peers_dir: PathBuf,
    out: PathBuf,
    /// Another ringmaster binary, run as the peer `baseline`.
    baseline: Option<PathBuf>,
    /// The port of the proxy load's upstream, once started.
    upstream: Option<u16>,
}

fn parse_args() -> Result<Args, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut args = Args {
        peers: Vec::new(),
        rounds: 3,
        duration: 10,
        workloads: vec![
            Workload::KeepAlive,
            Workload::Pipelined,
            Workload::Close,
            Workload::Wait,
            Workload::Idle,
        ],
        ablation: false,
        peers_dir: root.join("../shared/peers"),
        out: root.join("target/benchmarks/latest.md"),
        baseline: None,
        upstream: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--peers" => {
                args.peers = value("--peers")?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }
            "--rounds" => {
                args.rounds = value("--rounds")?
                    .parse()
                    .map_err(|_| "--rounds: a number")?
            }
            "--duration" => {
                args.duration = value("--duration")?
                    .parse()
                    .map_err(|_| "--duration: seconds")?
            }
            "--workloads" => {
                args.workloads = value("--workloads")?
                    .split(',')
                    .map(|w| Workload::parse(w).ok_or(format!("unknown workload {w}")))
                    .collect::<Result<_, _>>()?
            }
            "--ablation" => args.ablation = true,
            "--smoke" => {
                args.peers.clear();
                args.rounds = 1;
                args.duration = 2;
                args.workloads = vec![Workload::KeepAlive, Workload::Pipelined, Workload::Close];
            }
            "--peers-dir" => args.peers_dir = PathBuf::from(value("--peers-dir")?),
            "--out" => args.out = PathBuf::from(value("--out")?),
            "--baseline" => args.baseline = Some(PathBuf::from(value("--baseline")?)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.rounds == 0 || args.duration == 0 {
        return Err("--rounds and --duration must be at least 1".into());
    }
    Ok(args)
}

fn peer(name: &str, args: &Args, rust: &mut Option<PathBuf>) -> Result<Server, String> {
    // `NAME@N`: the peer with N workers (or threads), for loads where the load generator
    // must not be starved of a core.
    if let Some((base, n)) = name.split_once('@') {
        let n: u32 = n
            .parse()
            .map_err(|_| format!("{name}: the part after @ is a worker count"))?;
        let mut server = peer(base, args, rust)?;
        server.name = name.to_string();
        server.cpus = Some(n as usize);
        match base {
            "node" => server.env.retain(|(k, _)| k != "WORKERS"),
            "testbed" | "async" | "hello" | "hello-async" => {
                server.args.extend(["--workers".into(), n.to_string()])
            }
            "hyper" => {}
            other => return Err(format!("{other}: no worker count can be set (@{n})")),
        }
        match base {
            "node" => server.env.push(("WORKERS".into(), n.to_string())),
            "hyper" => server
                .env
                .push(("TOKIO_WORKER_THREADS".into(), n.to_string())),
            _ => {}
        }
        return Ok(server);
    }
    let dir = &args.peers_dir;
    let server = |program: PathBuf, a: &[&str], env: &[(&str, &str)], closes| Server {
        name: name.to_string(),
        program,
        args: a.iter().map(|s| s.to_string()).collect(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        closes,
        waits: matches!(name, "node" | "hyper"),
        statics: name == "nginx",
        proxies: name == "nginx",
        cpus: None,
    };
    match name {
        "nginx" => {
            which("nginx").ok_or("nginx is not installed: apt-get install nginx")?;
            let root = static_root().to_string_lossy().to_string();
            let upstream = args.upstream.unwrap_or(9).to_string();
            Ok(server(
                dir.join("run-nginx.sh"),
                &["{port}", &root, &upstream],
                &[],
                true,
            ))
        }
        "node" => {
            let node = which("node").ok_or("Node.js is not installed")?;
            let script = dir.join("node-cluster.js");
            let script = script.to_string_lossy().to_string();
            Ok(server(
                node,
                &[&script],
                &[("PORT", "{port}"), ("WORKERS", "2")],
                true,
            ))
        }
        "hyper" | "minihttp" | "monoio" => {
            if rust.is_none() {
                let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/peers");
                *rust = Some(rust_peers(dir, &target)?);
            }
            let bin = rust.as_ref().expect("set above").join(name);
            // monoio's raw loop ignores Connection: close, and may_minihttp keeps the
            // connection open too: neither can run the one-request-per-connection load.
            Ok(server(bin, &["{port}"], &[], name == "hyper"))
        }
        "floor" => {
            let bin = build_floor(dir)?;
            // Not a server: it answers every request alike and never closes.
            Ok(server(bin, &["{port}"], &[], false))
        }
        "testbed" | "async" => {
            let bin = build_testbed()?;
            let mut s = ringmaster(name, &[]);
            s.program = bin;
            s.waits = name == "async";
            if name == "async" {
                s.env = vec![("TESTBED_ASYNC".into(), "1".into())];
            }
            Ok(s)
        }
        "hello" | "hello-async" => {
            let bin = build_testbed()?;
            let mut s = ringmaster(name, &[]);
            s.program = bin;
            let mode = if name == "hello" { "sync" } else { "async" };
            s.env = vec![("TESTBED_HELLO".into(), mode.into())];
            Ok(s)
        }
        other => Err(format!("unknown peer {other}")),
    }
}

/// A child process killed when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The files the static loads ask for (`target/benchmarks/static`).
fn static_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/benchmarks/static")
}

/// Text-like bytes (so that gzip has something to do), `len` of them.
fn text(len: usize, seed: usize) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "ring ",
        "master ",
        "worker ",
        "io_uring ",
        "static ",
        "file ",
        "bytes ",
        "\n",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut i = seed;
    while out.len() < len {
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(WORDS[(i >> 60) % WORDS.len()].as_bytes());
    }
    out.truncate(len);
    out
}

/// Writes the static loads' files: `1k.bin`, `64k.bin`, `1m.bin`, and `mix/f00.js` ..
/// `f19.js` (3 to 300 KiB) each with a `.gz` made by `gzip -k`, and `mix.lua` asking for
/// them in turn with `Accept-Encoding: gzip`.
fn write_static_root() -> std::io::Result<()> {
    let root = static_root();
    std::fs::create_dir_all(root.join("mix"))?;
    for (name, len) in [
        ("1k.bin", 1 << 10),
        ("64k.bin", 64 << 10),
        ("1m.bin", 1 << 20),
    ] {
        std::fs::write(root.join(name), text(len, len))?;
    }
    let mut paths = Vec::new();
    for i in 0..20usize {
        // 3 KiB to 300 KiB, evenly on a log scale.
        let len = (3.0 * 1024.0 * 100f64.powf(i as f64 / 19.0)) as usize;
        let path = root.join(format!("mix/f{i:02}.js"));
        std::fs::write(&path, text(len, i))?;
        let gz = root.join(format!("mix/f{i:02}.js.gz"));
        let _ = std::fs::remove_file(&gz);
        let status = Command::new("gzip")
            .arg("-k")
            .arg("-f")
            .arg(&path)
            .status()?;
        if !status.success() || !gz.is_file() {
            return Err(std::io::Error::other(
                "gzip -k failed (apt-get install gzip)",
            ));
        }
        paths.push(format!("\"/static/mix/f{i:02}.js\""));
    }
    let lua = format!(
        "local paths = {{{}}}\nlocal i = 0\nrequest = function()\n  i = i % #paths + 1\n  return wrk.format(\"GET\", paths[i], {{[\"Accept-Encoding\"] = \"gzip\"}})\nend\n",
        paths.join(", ")
    );
    std::fs::write(root.join("mix.lua"), lua)
}

/// The kernel floor's binary, built with `cc` into `target/peers` on first use.
fn build_floor(peers_dir: &Path) -> Result<PathBuf, String> {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/peers/floor");
    if bin.is_file() {
        return Ok(bin);
    }
    std::fs::create_dir_all(bin.parent().expect("a folder")).map_err(|e| e.to_string())?;
    let status = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(peers_dir.join("floor/floor.c"))
        .status()
        .map_err(|e| format!("cc (apt-get install gcc): {e}"))?;
    match status.success() {
        true => Ok(bin),
        false => Err("building the floor failed".into()),
    }
}

/// The testbed example, built in release (this bench's own build leaves examples out).
fn build_testbed() -> Result<PathBuf, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet", "--example", "testbed"])
        .current_dir(&root)
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err("building the testbed example failed".into());
    }
    Ok(root.join("target/release/examples/testbed"))
}

fn ringmaster(name: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--listen".to_string(), "127.0.0.1:{port}".to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Server {
        name: name.to_string(),
        program: PathBuf::from(env!("CARGO_BIN_EXE_ringmaster")),
        args,
        env: Vec::new(),
        closes: true,
        waits: false,
        statics: false,
        proxies: false,
        cpus: None,
    }
}

/// Per-worker counters of a running ringmaster, from `ringmaster status --json`. Workers
/// report every second: the call first waits for a report made after the last load.
fn worker_counters(port: u16) -> Option<Vec<(u64, u64)>> {
    std::thread::sleep(Duration::from_millis(1200));
    let out = Command::new(env!("CARGO_BIN_EXE_ringmaster"))
        .args(["status", "--json", "--listen", &format!("127.0.0.1:{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |row: &str, name: &str| -> u64 {
        let key = format!("\"{name}\":");
        row.find(&key)
            .and_then(|at| row[at + key.len()..].split([',', '}']).next()?.parse().ok())
            .unwrap_or(0)
    };
    Some(
        text.split("{\"slot\":")
            .skip(1)
            .map(|row| (field(row, "requests"), field(row, "uring_enters")))
            .collect(),
    )
}

type Results = BTreeMap<(Workload, String), Vec<Sample>>;

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("compare: error: {e}");
            std::process::exit(2);
        }
    };
    // The wait load's clients (wrk inherits the limit) and the idle-memory measurement.
    raise_nofile(IDLE_CONNECTIONS as u64 + 4096);
    let Some(wrk) = which("wrk") else {
        eprintln!("compare: error: wrk is not installed; install it (apt-get install wrk)");
        std::process::exit(2);
    };
    let pipeline_lua =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/benchmarks/pipeline.lua");
    if let Err(e) = std::fs::create_dir_all(pipeline_lua.parent().expect("a folder"))
        .and_then(|()| std::fs::write(&pipeline_lua, PIPELINE_LUA))
    {
        eprintln!("compare: error: writing {}: {e}", pipeline_lua.display());
        std::process::exit(2);
    }
    let bench = Bench {
        wrk,
        pipeline_lua,
        duration: args.duration,
    };
    let statics = args.workloads.iter().any(|w| w.is_static());
    if statics {
        if let Err(e) = write_static_root() {
            eprintln!("compare: error: writing the static files: {e}");
            std::process::exit(2);
        }
    }
    let mut ours = ringmaster("ringmaster", &[]);
    if statics {
        // The Hello World loads then go through the router's fallback: run them apart.
        let mount = format!("/static={}", static_root().display());
        ours.args.extend(["--static".to_string(), mount]);
        ours.statics = true;
    }
    // The proxy load's upstream: the floor, one unpinned process, outside every server's
    // process tree (its CPU is not charged to the proxies).
    let mut args = args;
    let _upstream = match args.workloads.contains(&Workload::Proxy) {
        false => None,
        true => {
            let port = free_port();
            let floor = build_floor(&args.peers_dir).and_then(|bin| {
                Command::new(bin)
                    .args([port.to_string(), "1".to_string()])
                    .env("FLOOR_NOPIN", "1")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| e.to_string())
            });
            let child = match floor {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("compare: error: the proxy load's upstream: {e}");
                    std::process::exit(2);
                }
            };
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                std::thread::sleep(Duration::from_millis(20));
            }
            args.upstream = Some(port);
            let mount = format!("/proxy=http://127.0.0.1:{port}");
            ours.args.extend(["--proxy".to_string(), mount]);
            ours.proxies = true;
            Some(KillOnDrop(child))
        }
    };
    let args = args;
    // The baseline is this build's server with another binary: the same mounts, so it runs
    // the static and proxy loads too.
    let baseline = args.baseline.as_ref().map(|program| Server {
        name: "baseline".to_string(),
        program: program.clone(),
        ..ours.clone()
    });
    // Unpinned: this build with its workers left to the scheduler, the same mounts.
    let unpinned = args.peers.iter().any(|p| p == "unpinned").then(|| {
        let mut s = ours.clone();
        s.name = "unpinned".to_string();
        s.args
            .extend(["--cpu-affinity".to_string(), "none".to_string()]);
        s
    });
    let mut servers = vec![ours];
    servers.extend(baseline);
    servers.extend(unpinned);
    let mut rust = None;
    for name in args.peers.iter().filter(|p| *p != "unpinned") {
        match peer(name, &args, &mut rust) {
            Ok(s) => servers.push(s),
            Err(e) => {
                eprintln!("compare: error: {e}");
                std::process::exit(2);
            }
        }
    }
    let mut report = String::new();
    let machine = machine();
    let _ = writeln!(report, "Measured {}, {machine}.\n", today());
    let _ = writeln!(
        report,
        "Command: `cargo bench --bench compare -- {}`\n",
        std::env::args()
            .skip(1)
            .filter(|a| a != "--bench")
            .collect::<Vec<_>>()
            .join(" ")
    );
    let load: Vec<Workload> = args
        .workloads
        .iter()
        .copied()
        .filter(|w| *w != Workload::Idle)
        .collect();
    let mut results = Results::new();
    let mut extra = String::new();
    for round in 1..=args.rounds {
        for server in &servers {
            let port = free_port();
            let running = match server.start(port) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("compare: error: {e}");
                    std::process::exit(1);
                }
            };
            for &w in &load {
                if !server.runs(w) {
                    continue;
                }
                let before = (server.name == "ringmaster")
                    .then(|| worker_counters(port))
                    .flatten();
                match bench.measure(&running, w) {
                    Ok(sample) => {
                        eprintln!(
                            "round {round} {:<10} {:<28} {:>10.0} req/s {:>7.2} us/req errors {}",
                            server.name,
                            w.name(),
                            sample.rps,
                            sample.cpu_us,
                            sample.errors
                        );
                        results
                            .entry((w, server.name.clone()))
                            .or_default()
                            .push(sample);
                    }
                    Err(e) => eprintln!("round {round} {} {}: {e}", server.name, w.name()),
                }
                if let (Some(before), Some(after)) = (
                    before,
                    (server.name == "ringmaster")
                        .then(|| worker_counters(port))
                        .flatten(),
                ) {
                    note_workers(&mut extra, round, w, &before, &after);
                }
            }
            if round == 1 && args.workloads.contains(&Workload::Idle) && server.name != "nginx" {
                match idle_memory(&running, IDLE_CONNECTIONS) {
                    Ok(bytes) => {
                        eprintln!(
                            "{:<10} idle connection: {bytes:.0} B of PSS each",
                            server.name
                        );
                        results
                            .entry((Workload::Idle, server.name.clone()))
                            .or_default()
                            .push(Sample {
                                rps: 0.0,
                                cpu_us: bytes,
                                errors: 0,
                            });
                    }
                    Err(e) => eprintln!("{} idle memory: {e}", server.name),
                }
            }
        }
    }
    report.push_str(&table(&results, &servers, args.rounds));
    // Each load's medians as an SVG chart beside the report, linked from it.
    let dir = args.out.parent().map(PathBuf::from).unwrap_or_default();
    let _ = std::fs::create_dir_all(&dir);
    report.push_str("\nCharts (medians; the floor's CPU per request marked):\n\n");
    for (w, svg) in charts(&results, &servers) {
        let file = format!("{}.svg", w.slug());
        match std::fs::write(dir.join(&file), svg) {
            Ok(()) => {
                let _ = writeln!(report, "![{}]({file})", w.name());
            }
            Err(e) => eprintln!("compare: cannot write {file}: {e}"),
        }
    }
    report.push('\n');
    report.push_str(&round_ratios(&results));
    if !extra.is_empty() {
        report.push_str("\nringmaster's workers (from `ringmaster status --json`):\n\n");
        report.push_str(&extra);
    }
    if args.ablation {
        report.push_str(&ablation(&bench, args.rounds));
    }
    println!("{report}");
    if let Some(dir) = args.out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&args.out, &report) {
        Ok(()) => eprintln!("written to {}", args.out.display()),
        Err(e) => eprintln!("compare: cannot write {}: {e}", args.out.display()),
    }
}

/// Per-worker requests and requests per `io_uring_enter` for one ringmaster run.
fn note_workers(
    out: &mut String,
    round: u32,
    w: Workload,
    before: &[(u64, u64)],
    after: &[(u64, u64)],
) {
    let requests: Vec<u64> = after.iter().zip(before).map(|(a, b)| a.0 - b.0).collect();
    let enters: u64 = after.iter().zip(before).map(|(a, b)| a.1 - b.1).sum();
    let total: u64 = requests.iter().sum();
    let (max, min) = (
        requests.iter().copied().max().unwrap_or(0),
        requests.iter().copied().min().unwrap_or(0),
    );
    let _ = writeln!(
        out,
        "- round {round}, {}: requests per worker {:?} (spread {:.1}% of the busiest), {:.1} requests per io_uring_enter",
        w.name(),
        requests,
        if max > 0 { (max - min) as f64 * 100.0 / max as f64 } else { 0.0 },
        total as f64 / enters.max(1) as f64
    );
}

/// One SVG chart per load (idle memory aside): requests/s and CPU per request by server,
/// medians, as horizontal bars, with the floor's CPU per request marked by a dashed line.
fn charts(results: &Results, servers: &[Server]) -> Vec<(Workload, String)> {
    let mut workloads: Vec<Workload> = results.keys().map(|(w, _)| *w).collect();
    workloads.dedup();
    workloads
        .into_iter()
        .filter(|w| *w != Workload::Idle)
        .map(|w| {
            let rows: Vec<(String, f64, f64)> = servers
                .iter()
                .filter_map(|s| {
                    let samples = results.get(&(w, s.name.clone()))?;
                    Some((
                        s.name.clone(),
                        median(samples.iter().map(|x| x.rps).collect()),
                        median(samples.iter().map(|x| x.cpu_us).collect()),
                    ))
                })
                .collect();
            (w, chart_svg(w.name(), &rows))
        })
        .collect()
}

/// Two panels of bars, requests/s (left) and µs of CPU per request (right), a row per
/// server; ringmaster's bars darker, the floor's CPU a dashed line.
fn chart_svg(title: &str, rows: &[(String, f64, f64)]) -> String {
    const ROW: f64 = 22.0;
    const TOP: f64 = 46.0;
    const LABEL: f64 = 96.0;
    const PANEL: f64 = 250.0;
    let height = TOP + ROW * rows.len() as f64 + 14.0;
    let width = LABEL + 2.0 * PANEL + 60.0;
    let max_rps = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1.0);
    let max_cpu = rows.iter().map(|r| r.2).fold(0.0, f64::max).max(1e-9);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n\
         <text x=\"8\" y=\"16\" font-weight=\"bold\">{title}</text>\n\
         <text x=\"{LABEL}\" y=\"36\">requests/s (higher is better)</text>\n\
         <text x=\"{}\" y=\"36\">µs of CPU per request (lower is better)</text>\n",
        LABEL + PANEL + 30.0
    );
    for (i, (name, rps, cpu)) in rows.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let ours = name == "ringmaster";
        let fill = if ours { "#1f5fa8" } else { "#8fb3d9" };
        let rps_w = (rps / max_rps * (PANEL - 70.0)).max(1.0);
        let cpu_x = LABEL + PANEL + 30.0;
        let cpu_w = (cpu / max_cpu * (PANEL - 70.0)).max(1.0);
        let _ = write!(
            svg,
            "<text x=\"8\" y=\"{ty}\"{bold}>{name}</text>\n\
             <rect x=\"{LABEL}\" y=\"{y}\" width=\"{rps_w:.1}\" height=\"16\" fill=\"{fill}\"/>\n\
             <text x=\"{rx:.1}\" y=\"{ty}\">{rps:.0}</text>\n\
             <rect x=\"{cpu_x}\" y=\"{y}\" width=\"{cpu_w:.1}\" height=\"16\" fill=\"{fill}\"/>\n\
             <text x=\"{cx:.1}\" y=\"{ty}\">{cpu:.2}</text>\n",
            ty = y + 12.0,
            bold = if ours { " font-weight=\"bold\"" } else { "" },
            rx = LABEL + rps_w + 4.0,
            cx = cpu_x + cpu_w + 4.0,
        );
    }
    if let Some((_, _, floor)) = rows.iter().find(|r| r.0 == "floor") {
        let x = LABEL + PANEL + 30.0 + floor / max_cpu * (PANEL - 70.0);
        let _ = write!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#c00\" \
             stroke-dasharray=\"4 3\"/>\n<text x=\"{x:.1}\" y=\"{}\" fill=\"#c00\" \
             font-size=\"10\">floor</text>\n",
            TOP - 4.0,
            height - 10.0,
            height - 1.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn table(results: &Results, servers: &[Server], rounds: u32) -> String {
    let mut out = String::new();
    let workloads: Vec<Workload> = {
        let mut w: Vec<Workload> = results.keys().map(|(w, _)| *w).collect();
        w.dedup();
        w
    };
    for w in workloads {
        let _ = writeln!(out, "### {} (median of {rounds} rounds)\n", w.name());
        if w == Workload::Idle {
            let _ = writeln!(
                out,
                "| server | PSS per idle connection | ringmaster / server |"
            );
            let _ = writeln!(out, "| --- | --- | --- |");
        } else {
            let _ = writeln!(
                out,
                "| server | requests/s | CPU per request | ringmaster req/s ÷ server | ringmaster CPU ÷ server | errors |"
            );
            let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
        }
        // Ours: the ringmaster binary, or its async testbed (`async`, else the first
        // `async@N`) for the loads only it runs.
        let ours = results
            .get(&(w, "ringmaster".to_string()))
            .or_else(|| results.get(&(w, "async".to_string())))
            .or_else(|| {
                servers
                    .iter()
                    .filter(|s| s.name.starts_with("async@"))
                    .find_map(|s| results.get(&(w, s.name.clone())))
            });
        let ours_rps = ours.map(|s| median(s.iter().map(|x| x.rps).collect()));
        let ours_cpu = ours.map(|s| median(s.iter().map(|x| x.cpu_us).collect()));
        for server in servers {
            let Some(samples) = results.get(&(w, server.name.clone())) else {
                continue;
            };
            let rps = median(samples.iter().map(|x| x.rps).collect());
            let cpu = median(samples.iter().map(|x| x.cpu_us).collect());
            let errors: u64 = samples.iter().map(|x| x.errors).sum();
            if w == Workload::Idle {
                let _ = writeln!(
                    out,
                    "| {} | {cpu:.0} B | {:.2} |",
                    server.name,
                    ours_cpu.unwrap_or(f64::NAN) / cpu
                );
            } else {
                let _ = writeln!(
                    out,
                    "| {} | {rps:.0} | {cpu:.2} µs | {:.2} | {:.2} | {errors} |",
                    server.name,
                    ours_rps.unwrap_or(f64::NAN) / rps,
                    ours_cpu.unwrap_or(f64::NAN) / cpu
                );
            }
        }
        out.push('\n');
    }
    out
}

/// Each round's ratios of ringmaster to its own variants (`unpinned`, `baseline`), which
/// the medians alone hide: the rounds' samples are in round order.
fn round_ratios(results: &Results) -> String {
    let mut out = String::new();
    for ((w, name), theirs) in results {
        if !matches!(name.as_str(), "unpinned" | "baseline") || *w == Workload::Idle {
            continue;
        }
        let Some(ours) = results.get(&(*w, "ringmaster".to_string())) else {
            continue;
        };
        let ratios = |f: fn(&Sample) -> f64| -> Vec<String> {
            ours.iter()
                .zip(theirs)
                .map(|(a, b)| format!("{:.2}", f(a) / f(b)))
                .collect()
        };
        let _ = writeln!(
            out,
            "- {}, ringmaster ÷ {name} per round: req/s {}; CPU per request {}",
            w.name(),
            ratios(|x| x.rps).join(", "),
            ratios(|x| x.cpu_us).join(", ")
        );
    }
    match out.is_empty() {
        true => out,
        false => format!("Per round:\n\n{out}\n"),
    }
}

/// ringmaster with each io_uring feature switched off in turn, against itself.
fn ablation(bench: &Bench, rounds: u32) -> String {
    let variants: [(&str, &[&str]); 7] = [
        ("all features", &[]),
        (
            "--uring-no-direct-descriptors",
            &["--uring-no-direct-descriptors"],
        ),
        ("--uring-no-defer-taskrun", &["--uring-no-defer-taskrun"]),
        (
            "--uring-no-multishot-accept",
            &["--uring-no-multishot-accept"],
        ),
        ("--uring-no-multishot-recv", &["--uring-no-multishot-recv"]),
        (
            "--uring-no-registered-ring",
            &["--uring-no-registered-ring"],
        ),
        ("--listen-mode shared", &["--listen-mode", "shared"]),
    ];
    let workloads = [Workload::KeepAlive, Workload::Pipelined, Workload::Close];
    let mut samples: BTreeMap<(usize, Workload), Vec<Sample>> = BTreeMap::new();
    for round in 1..=rounds {
        for (i, (name, flags)) in variants.iter().enumerate() {
            let server = ringmaster(name, flags);
            let Ok(running) = server.start(free_port()) else {
                continue;
            };
            for w in workloads {
                if let Ok(s) = bench.measure(&running, w) {
                    eprintln!(
                        "ablation round {round} {name:<28} {:<28} {:>10.0} req/s {:>7.2} us/req",
                        w.name(),
                        s.rps,
                        s.cpu_us
                    );
                    samples.entry((i, w)).or_default().push(s);
                }
            }
        }
    }
    let mut out = format!(
        "\n### Ablation: each io_uring feature off in turn (median of {rounds} rounds)\n\n"
    );
    out.push_str(
        "| variant | workload | requests/s | CPU per request | req/s vs all | CPU vs all |\n",
    );
    out.push_str("| --- | --- | --- | --- | --- | --- |\n");
    for w in workloads {
        let base = samples.get(&(0, w)).map(|s| {
            (
                median(s.iter().map(|x| x.rps).collect()),
                median(s.iter().map(|x| x.cpu_us).collect()),
            )
        });
        for (i, (name, _)) in variants.iter().enumerate() {
            let Some(s) = samples.get(&(i, w)) else {
                continue;
            };
            let rps = median(s.iter().map(|x| x.rps).collect());
            let cpu = median(s.iter().map(|x| x.cpu_us).collect());
            let (brps, bcpu) = base.unwrap_or((f64::NAN, f64::NAN));
            let _ = writeln!(
                out,
                "| {name} | {} | {rps:.0} | {cpu:.2} µs | {:.2} | {:.2} |",
                w.name(),
                rps / brps,
                cpu / bcpu
            );
        }
    }
    out
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{cpus} CPUs ({model}), Linux {kernel}, wrk -t1 on the same machine")
}

fn today() -> String {
    let out = Command::new("date").arg("+%Y-%m-%d").output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
