//! Shared helpers for the integration tests: start the real binary on port 0, follow its
//! log, talk HTTP over real sockets. Every wait is bounded.
#![allow(dead_code)]

pub mod load;
pub mod metrics;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The longest any helper waits for something it expects.
pub const WAIT_MAX: Duration = Duration::from_secs(10);

/// The log lines a process wrote so far, with a condvar signalled on each new one and at
/// the end of the stream.
#[derive(Default)]
struct Log {
    lines: Mutex<Lines>,
    grew: Condvar,
}

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    /// Every writer closed the stream: the master and all its workers are gone.
    ended: bool,
}

/// A running `ringmaster` master with its workers.
pub struct Server {
    child: Option<Child>,
    log: Arc<Log>,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `ringmaster ARGS --listen 127.0.0.1:0` (unless ARGS has --listen) and waits
    /// until every worker is ready.
    pub fn start(args: &[&str]) -> Server {
        let mut all: Vec<&str> = args.to_vec();
        if !args.contains(&"--listen") {
            all.extend(["--listen", "127.0.0.1:0"]);
        }
        let mut server = Server::spawn(&all);
        let line = server.wait_log("listening on ");
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        server.addr = addr;
        let workers: usize = line
            .split('(')
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("worker count in the listening line");
        server.wait_log_count("ready (pid", workers);
        server
    }

    /// Spawns the binary with exactly `args` and starts following its stderr.
    pub fn spawn(args: &[&str]) -> Server {
        Server::spawn_command(Command::new(env!("CARGO_BIN_EXE_ringmaster")).args(args))
    }

    /// Like [`Server::start`], for any command (an example, or the binary under a
    /// `pre_exec` hook); waits for `workers` ready lines.
    pub fn start_command(command: &mut Command, workers: usize) -> Server {
        let mut server = Server::spawn_command(command);
        let line = server.wait_log("listening on ");
        server.addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        server.wait_log_count("ready (pid", workers);
        server
    }

    /// Spawns `command` and starts following its stderr.
    pub fn spawn_command(command: &mut Command) -> Server {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringmaster");
        let log = Arc::new(Log::default());
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("RM_TEST_LOG").is_some() {
                    eprintln!("{line}");
                }
                sink.lines.lock().unwrap().lines.push(line);
                sink.grew.notify_all();
            }
            sink.lines.lock().unwrap().ended = true;
            sink.grew.notify_all();
        });
        Server {
            child: Some(child),
            log,
            addr: "0.0.0.0:0".parse().unwrap(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits until a log line contains `needle`; returns the first such line.
    pub fn wait_log(&self, needle: &str) -> String {
        self.wait_log_count(needle, 1).remove(0)
    }

    /// Waits until `count` log lines contain `needle`; returns them.
    pub fn wait_log_count(&self, needle: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + WAIT_MAX;
        let mut lines = self.log.lines.lock().unwrap();
        loop {
            let found: Vec<String> = lines
                .lines
                .iter()
                .filter(|l| l.contains(needle))
                .cloned()
                .collect();
            if found.len() >= count {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "waited {WAIT_MAX:?} for {count} lines with {needle:?}; log:\n{}",
                lines.lines.join("\n")
            );
            lines = self.log.grew.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lines.lock().unwrap().lines.clone()
    }

    /// The master's live children: the workers.
    pub fn worker_pids(&self) -> Vec<u32> {
        children(self.pid())
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY (test): sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, signal) }, 0);
    }

    /// Waits for the master to exit, then for the end of its log (every worker gone too,
    /// every line read), so that `log()` afterwards holds its last words.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + WAIT_MAX;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "master did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut lines = self.log.lines.lock().unwrap();
        while !lines.ended {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the master exited ({status}) but something still holds its stderr open"
            );
            lines = self.log.grew.wait_timeout(lines, left).unwrap().0;
        }
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Killing the master kills its workers (PR_SET_PDEATHSIG).
            let _ = child.kill();
            let _ = child.wait();
            // A killed master leaves its control socket behind: clean up after it.
            if self.addr.port() != 0 {
                let _ = std::fs::remove_file(control_path(self.addr.port()));
            }
        }
    }
}

/// The default control socket path of a master on `port`.
pub fn control_path(port: u16) -> String {
    ringmaster::Config::default()
        .control_path(port)
        .to_string_lossy()
        .into_owned()
}

/// Makes the directory of the default control socket for `port` exist, private (mode
/// 0700), as a master creates it, for a test that puts a file there before a master runs.
pub fn make_control_dir(port: u16) {
    use std::os::unix::fs::DirBuilderExt;
    let path = control_path(port);
    let dir = std::path::Path::new(&path).parent().unwrap();
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("creating {}: {e}", dir.display()),
    }
}

/// The child processes of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Polls `cond` every few milliseconds until it holds or `WAIT_MAX` passes.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_MAX;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The CPUs this process may run on (what `--workers auto` counts).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY (test): a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY (test): `set` is a valid cpu_set_t of the size passed.
    let ret = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    assert_eq!(ret, 0);
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY (test): `cpu` is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// A parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A connection with a read timeout, so no test can hang on a silent server.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT_MAX)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads one response (head, then a body of `Content-Length` bytes unless `head_only`).
pub fn read_response(reader: &mut BufReader<TcpStream>, head_only: bool) -> Response {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    assert!(line.ends_with("\r\n"), "status line {line:?}");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header line");
        if line == "\r\n" {
            break;
        }
        let (name, value) = line
            .trim_end()
            .split_once(':')
            .unwrap_or_else(|| panic!("bad header line {line:?}"));
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; if head_only { 0 } else { len }];
    reader.read_exact(&mut body).expect("body");
    Response {
        status,
        headers,
        body,
    }
}

/// Sends `raw` on a new connection and reads one response.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> (Response, BufReader<TcpStream>) {
    let mut stream = connect(addr);
    stream.write_all(raw).unwrap();
    let mut reader = BufReader::new(stream);
    let response = read_response(&mut reader, false);
    (response, reader)
}

/// Whether the server closed the connection: the next read sees end of stream (or a
/// reset), within the read timeout.
pub fn closed_by_server(reader: &mut BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// A directory for one test under the system's temporary directory, empty at first and
/// removed when dropped.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// `ringmaster-KIND-NAME-PID`: the test file's subject, the test's name, this process.
    pub fn new(kind: &str, name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("ringmaster-{kind}-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// The directory itself.
    pub fn root(&self) -> &std::path::Path {
        &self.0
    }

    /// `rel` beneath it.
    pub fn path(&self, rel: &str) -> std::path::PathBuf {
        self.0.join(rel)
    }

    /// Writes `bytes` at `rel`, its directories created; returns its path.
    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) -> std::path::PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Puts `bytes` at `rel` with permissions `mode` the way a deploy or an editor does:
    /// written beside it, then renamed over it. Returns its path.
    pub fn replace(&self, rel: &str, bytes: impl AsRef<[u8]>, mode: u32) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let next = self.write(&format!("{rel}.next"), bytes);
        std::fs::set_permissions(&next, std::fs::Permissions::from_mode(mode)).unwrap();
        let path = self.path(rel);
        std::fs::rename(&next, &path).unwrap();
        path
    }

    /// `PREFIX=DIR`, as `--static` takes it.
    pub fn mount_arg(&self, prefix: &str) -> String {
        format!("{prefix}={}", self.0.display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The path of a built example program.
pub fn example(name: &str) -> std::path::PathBuf {
    // Integration tests live in target/<profile>/deps; examples in target/<profile>/examples.
    let deps = std::env::current_exe().unwrap();
    let profile = deps.parent().unwrap().parent().unwrap();
    let path = profile.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo test --workspace`, which builds the examples first",
        path.display()
    );
    path
}

/// The testbed example (a handler whose behaviour tests choose) with `args`, on port 0.
pub fn testbed(args: &[&str]) -> Command {
    let mut command = Command::new(example("testbed"));
    command.args(args).args(["--listen", "127.0.0.1:0"]);
    command
}

/// Whether this kernel gives workers direct descriptors (Linux 6.7 and newer), as the
/// master decides it.
pub fn direct_supported() -> bool {
    ringmaster_uring::Features::probe().is_ok_and(|f| f.direct_accept && f.socket_cmd)
}

/// The open descriptors of `pid`, each as `number -> target`, sorted by number.
pub fn open_fds(pid: u32) -> Vec<String> {
    let mut fds: Vec<(u32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let n = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((n, target.display().to_string()))
        })
        .collect();
    fds.sort();
    fds.into_iter()
        .map(|(n, t)| format!("{n} -> {t}"))
        .collect()
}

/// Sends a command to the master's control socket and returns the answer.
pub fn control(server: &Server, command: &str) -> String {
    let path = control_path(server.addr.port());
    let mut stream = std::os::unix::net::UnixStream::connect(&path)
        .unwrap_or_else(|e| panic!("control socket {path}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(format!("{command}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// The first worker's `name` field in `status json` (workers report once a second).
pub fn worker_stat(server: &Server, name: &str) -> u64 {
    let json = control(server, "status json");
    let row = json.split("\"workers\":[").nth(1).expect("a workers array");
    let key = format!("\"{name}\":");
    let at = row
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {json}"));
    row[at + key.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {json}"))
}

/// `GET / HTTP/1.1` with a Host.
pub const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

/// A TCP port on 127.0.0.1 that was free a moment ago (the small race until a server binds
/// it is accepted).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The one line a failed command wrote on stderr, which must start `ringmaster: error: `.
pub fn one_error_line(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    assert!(lines[0].starts_with("ringmaster: error: "), "{stderr}");
    lines[0].to_string()
}

/// `tcpi_state` of a socket that was reset (closed).
pub const TCP_CLOSE: u8 = 7;

/// The TCP state of a socket (`tcpi_state`: 1 is ESTABLISHED, [`TCP_CLOSE`] after a reset).
pub fn tcp_state(stream: &TcpStream) -> u8 {
    use std::os::fd::AsRawFd;
    let mut info = [0u8; 256];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY (test): TCP_INFO writes at most `len` bytes into `info`.
    let ret = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(ret, 0);
    info[0]
}

/// The HTTP strictness cases (RFC 9112 and the smuggling vectors): each request, and the
/// status it must get, followed by a close.
#[rustfmt::skip]
pub fn strictness_cases() -> Vec<(&'static str, Vec<u8>, u16)> {
    // A method past METHOD_BYTES_MAX (32) is 501 from its 33rd byte, long before the 414 of
    // an 8 KiB request line.
    let method_33 = format!("{} / HTTP/1.1\r\nHost: t\r\n\r\n", "M".repeat(33));
    let method_100k = vec![b'M'; 100 * 1024];
    let cases: Vec<(&str, &[u8], u16)> = vec![
        ("1 CL and TE", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("2 two CL", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
        ("3 CL +1", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +1\r\n\r\nx", 400),
        ("4 unknown coding", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ("4 chunked twice", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
        ("4 TE in 1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("5 bad chunk size", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        ("5 chunk overflow", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", 400),
        ("5 chunk bare LF", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n", 400),
        ("5 chunk ext bare ;", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1;\r\nx\r\n0\r\n\r\n", 400),
        ("5 chunk ext not a token", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1;bad[=x\r\nx\r\n0\r\n\r\n", 400),
        ("5 chunk ext unterminated quote", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\"x\r\nx\r\n0\r\n\r\n", 400),
        ("5 whitespace after chunk size", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\nx\r\n0\r\n\r\n", 400),
        ("6 space before colon", b"GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400),
        ("7 obs-fold", b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n", 400),
        ("8 no colon", b"GET / HTTP/1.1\r\nHost: t\r\nNoColon\r\n\r\n", 400),
        ("9 NUL in value", b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n", 400),
        ("10 bare LF", b"GET / HTTP/1.1\nHost: t\n\n", 400),
        ("10 bare CR", b"GET / HTTP/1.1\rHost: t\r\n\r\n", 400),
        ("11 no Host", b"GET / HTTP/1.1\r\n\r\n", 400),
        ("11 two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("12 target with space", b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("12 UTF-8 in target", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("12 target * with GET", b"GET * HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("12 relative target", b"GET foo HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("12 absolute target, other scheme", b"GET ftp://t/ HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("12 absolute target, no host", b"GET http:///pid HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("12 absolute target, userinfo", b"GET http://u@t/ HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("12 HTTP/2.0", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        ("14 method not a token", b"G@T / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("14 CONNECT", b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n", 501),
        ("14 method of 33 bytes", method_33.as_bytes(), 501),
        ("14 method of 100 KiB", &method_100k, 501),
        ("15 too many empty lines", b"\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("Expect other", b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx", 417),
    ];
    cases
        .into_iter()
        .map(|(name, raw, status)| (name, raw.to_vec(), status))
        .collect()
}

/// What RFC 9112 lets through: each is answered by the handler.
pub fn lenient_cases() -> Vec<(&'static str, Vec<u8>)> {
    let method_32 = format!("{} / HTTP/1.1\r\nHost: t\r\n\r\n", "M".repeat(32));
    vec![
        ("14 method of 32 bytes", method_32.into_bytes()),
        (
            "14 unknown method",
            b"BREW /pot HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
        ),
        (
            "15 empty lines first",
            b"\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
        ),
    ]
}

/// `GET target` for `host`, with these field lines, as bytes.
pub fn get_with(host: &str, target: &str, fields: &[&str]) -> Vec<u8> {
    let mut raw = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n");
    for f in fields {
        raw.push_str(f);
        raw.push_str("\r\n");
    }
    raw.push_str("\r\n");
    raw.into_bytes()
}

/// A process's resident set and its peak, in KiB (`VmRSS`, `VmHWM`).
pub fn rss_and_peak_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {status}"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Makes `command` run under a seccomp filter that fails `io_uring_setup` with `errno`, the
/// way a container runtime's default profile does.
pub fn without_io_uring(command: &mut Command, errno: i32) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY (test): pre_exec runs in the child between fork and exec; prctl is
    // async-signal-safe and the filter program lives on this stack for the call.
    unsafe {
        command.pre_exec(move || {
            const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
            const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
            let filter = [
                // Load the syscall number (offset 0 of struct seccomp_data).
                libc::sock_filter {
                    code: 0x20,
                    jt: 0,
                    jf: 0,
                    k: 0,
                },
                // if nr == io_uring_setup: fall through to ERRNO, else skip to ALLOW.
                libc::sock_filter {
                    code: 0x15,
                    jt: 0,
                    jf: 1,
                    k: libc::SYS_io_uring_setup as u32,
                },
                libc::sock_filter {
                    code: 0x06,
                    jt: 0,
                    jf: 0,
                    k: SECCOMP_RET_ERRNO | errno as u32,
                },
                libc::sock_filter {
                    code: 0x06,
                    jt: 0,
                    jf: 0,
                    k: SECCOMP_RET_ALLOW,
                },
            ];
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}
