//! Static files: [`Static`], a handler that serves the files beneath a root directory, and
//! [`relative_path`], which turns a request's path into a path that cannot leave the root.
//!
//! Two defences keep requests inside the root: [`relative_path`] refuses `..` (sent or
//! encoded), an encoded `/`, NUL and bad escapes; and every file is opened with
//! `openat2(RESOLVE_BENEATH)` through [`rt::fs::Dir`](crate::rt::fs::Dir), so that the kernel
//! refuses an absolute path or a symbolic link that leads out.
//!
//! The path rules are written by hand: they are few and strict (refuse rather than
//! normalise), and a crate that normalises `..` would accept what must be refused. MIME
//! types come from `mime_guess`, HTTP dates from `httpdate`.
//!
//! See [`Static`]'s example (static files mounted on a router) and [`relative_path`]'s.

use crate::rt::fs::{Dir, File, Metadata};
use crate::{AsyncHandler, OwnedRequest, Response};
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

/// Why a request path was refused.
///
/// See [`relative_path`]'s example.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// A NUL byte, sent or encoded.
    Nul,
    /// An encoded `/` (`%2f`): a name cannot hold one.
    EncodedSlash,
    /// A `..` segment, sent or encoded (`%2e%2e`).
    DotDot,
    /// The decoded path is not UTF-8.
    NotUtf8,
    /// Longer than [`PATH_BYTES_MAX`] once decoded.
    TooLong,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathError::BadEscape => "a % not followed by two hex digits",
            PathError::Nul => "a NUL byte",
            PathError::EncodedSlash => "an encoded /",
            PathError::DotDot => "a .. segment",
            PathError::NotUtf8 => "not UTF-8 once decoded",
            PathError::TooLong => "longer than files::PATH_BYTES_MAX",
        })
    }
}

impl std::error::Error for PathError {}

/// The longest relative path [`relative_path`] gives, in bytes (Linux's `PATH_MAX` is 4096).
///
/// # Examples
///
/// ```
/// # use ringmaster::files::{relative_path, PathError, PATH_BYTES_MAX};
/// let name = "a".repeat(PATH_BYTES_MAX);
/// assert!(relative_path(&format!("/{name}")).is_ok());
/// assert_eq!(relative_path(&format!("/{name}a")), Err(PathError::TooLong));
/// ```
pub const PATH_BYTES_MAX: usize = 4095;

/// The path below the root that the request path `path` names: percent-decoded, empty and
/// `.` segments dropped, joined by `/`, with no leading `/` (empty for the root itself).
/// Refused, never normalised: a `..` segment (`%2e%2e` included), an encoded `/`, a NUL,
/// a bad escape, a path that is not UTF-8 once decoded, or one over [`PATH_BYTES_MAX`].
///
/// ```
/// use ringmaster::files::{relative_path, PathError};
/// assert_eq!(relative_path("/a//b/./c%20d.txt").unwrap(), "a/b/c d.txt");
/// assert_eq!(relative_path("/").unwrap(), "");
/// assert_eq!(relative_path("/a/%2e%2e/b"), Err(PathError::DotDot));
/// assert_eq!(relative_path("/a%2fb"), Err(PathError::EncodedSlash));
/// ```
pub fn relative_path(path: &str) -> Result<String, PathError> {
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/') {
        let decoded = decode(segment)?;
        match decoded.as_str() {
            "" | "." => continue,
            ".." => return Err(PathError::DotDot),
            name => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(name);
            }
        }
        if out.len() > PATH_BYTES_MAX {
            return Err(PathError::TooLong);
        }
    }
    Ok(out)
}

/// One segment, percent-decoded.
fn decode(segment: &str) -> Result<String, PathError> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = match bytes[i] {
            b'%' => {
                let hex = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) else {
                    return Err(PathError::BadEscape);
                };
                i += 2;
                (hi * 16 + lo) as u8
            }
            b => b,
        };
        match b {
            0 => return Err(PathError::Nul),
            b'/' => return Err(PathError::EncodedSlash),
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| PathError::NotUtf8)
}

/// Files at most this large are kept in memory by the per-worker cache and sent from there
/// (one send); larger ones keep an open descriptor and are sent by `splice` through the
/// ring (see [`BodyWriter::send_file`](crate::BodyWriter::send_file)), which costs less
/// from [`crate::rt::SPLICE_BYTES_MIN`] up.
///
/// See [`Static`]'s example, whose `/assets` mount is served through this cache.
pub const CACHED_FILE_BYTES_MAX: u64 = crate::rt::SPLICE_BYTES_MIN;
/// Entries in each worker's cache of descriptors, metadata and small files (missing files
/// included); past it the entry checked longest ago is dropped.
///
/// See [`Static`]'s example, whose `/assets` mount is served through this cache.
pub const CACHE_ENTRIES_MAX: usize = 1024;
/// Bytes of small files each worker's cache holds at most.
///
/// See [`Static`]'s example, whose `/assets` mount is served through this cache.
pub const CACHE_BYTES_MAX: usize = 32 << 20;
/// How long a cached entry is served before its file is checked again (`statx` through the
/// ring): a file changed on disk is served changed within this time.
///
/// See [`Static`]'s example, whose `/assets` mount is served through this cache.
pub const CACHE_VALID: Duration = Duration::from_secs(1);

/// `EACCES`: a file this process may not read (`403`). Every other error opening a path,
/// `EXDEV` and `ELOOP` from `RESOLVE_BENEATH` for a way out of the root included, is `404`.
const EACCES: i32 = 13;

/// A handler that serves the files beneath a directory, as nginx's `root` with
/// `open_file_cache` and `gzip_static` does: mount it with [`Router::mount`](crate::Router::mount)
/// (or `--static PREFIX=DIR` on the command line).
///
/// - `GET` and `HEAD`; `OPTIONS` → `204`; other methods → `405` with `Allow`.
/// - `Content-Type` from the extension, `ETag` (modification time and size) and
///   `Last-Modified`; `If-None-Match` / `If-Modified-Since` → `304`.
/// - `Range: bytes=…` with one range → `206`; several ranges → `200` with the whole file;
///   an unsatisfiable one → `416`. `If-Range` is honoured.
/// - A directory's `index.html` for a path ending in `/`; a directory named without the
///   `/` is redirected (`301`) to it; no listings.
/// - Pre-compressed variants beside the file (`NAME.br`, `NAME.gz`) are sent to clients
///   that accept them, with `Content-Encoding`; every file answer carries
///   `Vary: Accept-Encoding`.
/// - No escape from the root (see the module's doc): a refused path is `400`, a path that
///   leads out through a symbolic link `404`, a missing file `404`, an unreadable one `403`.
/// - Files are opened, stat'ed and read through the worker's ring. Each worker keeps a cache
///   of [`CACHE_ENTRIES_MAX`] entries (descriptors, metadata, files up to
///   [`CACHED_FILE_BYTES_MAX`] in memory, [`CACHE_BYTES_MAX`] in all), each checked again
///   after [`CACHE_VALID`]. Larger files go from the page cache to the socket by
///   `splice`, with no copy through user space. A read that fails part-way closes the
///   connection (the length was already sent).
/// - Each worker opens the root once, on its first request: a root that is a symbolic link
///   switched to another directory (`current -> releases/N`) is served anew by the workers
///   of the next `ringmaster reload`.
///
/// Mounted on a [`Router`](crate::Router), beside a reverse proxy and your own routes:
///
/// ```no_run
/// use ringmaster::files::Static;
/// use ringmaster::proxy::Proxy;
/// use ringmaster::{Async, Request, Response, Router, Server};
///
/// // Both are async handlers: mounted as such, with `Async`.
/// let router = Router::new()
///     .get("/health", |_: &Request<'_>, res: &mut Response| {
///         res.body("ok\n");
///     })
///     .mount("/assets", Async(Static::new("./public").expect("a directory")))
///     .mount("/api", Async(Proxy::new(&["http://127.0.0.1:8080"]).expect("an upstream")));
/// std::process::exit(ringmaster::cli::run(ringmaster::app!(), Server::new(router)));
/// ```
#[derive(Clone, Debug)]
pub struct Static {
    inner: Rc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    /// Opened by each worker on its first request (after the fork).
    dir: RefCell<Option<Rc<Dir>>>,
    cache: RefCell<Cache>,
}

impl Static {
    /// Serves the files beneath `root`, which must be a directory (checked now, so that a
    /// mistyped root fails at start rather than with a `404` per request).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::files::Static;
    /// use ringmaster::{Async, Router};
    ///
    /// let files = Static::new(std::env::temp_dir()).unwrap();
    /// let router = Router::new().mount("/files", Async(files));
    /// # let _ = router;
    /// // A mistyped root is an error now, not a `404` per request.
    /// let err = Static::new("/no/such/dir").unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    /// ```
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<Static> {
        let root = root.into();
        let meta = std::fs::metadata(&root).map_err(|e| {
            std::io::Error::new(e.kind(), format!("static root {}: {e}", root.display()))
        })?;
        if !meta.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("static root {} is not a directory", root.display()),
            ));
        }
        Ok(Static {
            inner: Rc::new(Inner {
                root,
                dir: RefCell::new(None),
                cache: RefCell::new(Cache::default()),
            }),
        })
    }

    /// The directory served.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::files::Static;
    ///
    /// let dir = std::env::temp_dir();
    /// let files = Static::new(&dir).unwrap();
    /// assert_eq!(files.root(), dir);
    /// ```
    pub fn root(&self) -> &Path {
        &self.inner.root
    }
}

impl AsyncHandler for Static {
    type Future = Pin<Box<dyn Future<Output = Response>>>;

    fn call(&self, req: OwnedRequest) -> Self::Future {
        Box::pin(serve(self.inner.clone(), req))
    }
}

/// A file as the cache holds it.
#[derive(Clone, Debug)]
struct FileInfo {
    meta: Metadata,
    /// From the extension of the name it was loaded by (a `.gz` variant's is its own;
    /// the answer takes the base file's).
    content_type: &'static str,
    etag: Rc<str>,
    modified: Rc<str>,
    body: Body,
}

#[derive(Clone, Debug)]
enum Body {
    Memory(Rc<[u8]>),
    Open(Rc<File>),
}

/// What a path beneath the root is.
#[derive(Clone, Debug)]
enum Found {
    File(FileInfo),
    Dir,
    /// The error opening it gave (an errno).
    Missing(i32),
}

#[derive(Debug)]
struct Entry {
    found: Found,
    checked: Instant,
    generation: u64,
}

#[derive(Debug, Default)]
struct Cache {
    entries: HashMap<String, Entry>,
    /// Keys in the order they were put, with the generation each was put at: the oldest
    /// live one is evicted first; stale pairs (of keys put again since) are skipped.
    order: std::collections::VecDeque<(String, u64)>,
    generation: u64,
    bytes: usize,
}

impl Cache {
    fn fresh(&self, path: &str, now: Instant) -> Option<Found> {
        let e = self.entries.get(path)?;
        (now.duration_since(e.checked) < CACHE_VALID).then(|| e.found.clone())
    }

    fn put(&mut self, path: &str, found: Found, now: Instant) {
        if let Some(old) = self.entries.remove(path) {
            self.bytes -= memory_of(&old.found);
        }
        let add = memory_of(&found);
        while !self.entries.is_empty()
            && (self.entries.len() >= CACHE_ENTRIES_MAX || self.bytes + add > CACHE_BYTES_MAX)
        {
            if !self.evict_oldest() {
                // Every entry has its pair in `order`; should one not, start afresh.
                self.entries.clear();
                self.order.clear();
                self.bytes = 0;
            }
        }
        if add > CACHE_BYTES_MAX {
            return;
        }
        self.generation += 1;
        self.bytes += add;
        self.entries.insert(
            path.to_string(),
            Entry {
                found,
                checked: now,
                generation: self.generation,
            },
        );
        self.order.push_back((path.to_string(), self.generation));
        if self.order.len() > 2 * CACHE_ENTRIES_MAX {
            // Mostly stale pairs: keep the live ones (amortised over as many puts).
            let entries = &self.entries;
            self.order
                .retain(|(k, g)| entries.get(k).is_some_and(|e| e.generation == *g));
        }
    }

    /// Drops the entry put longest ago; `false` when none was found.
    fn evict_oldest(&mut self) -> bool {
        while let Some((key, generation)) = self.order.pop_front() {
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.generation == generation)
            {
                let gone = self.entries.remove(&key).expect("just found");
                self.bytes -= memory_of(&gone.found);
                return true;
            }
        }
        false
    }
}

fn memory_of(found: &Found) -> usize {
    match found {
        Found::File(FileInfo {
            body: Body::Memory(b),
            ..
        }) => b.len(),
        _ => 0,
    }
}

impl Inner {
    async fn dir(&self) -> std::io::Result<Rc<Dir>> {
        if let Some(dir) = self.dir.borrow().as_ref() {
            return Ok(dir.clone());
        }
        let dir = Rc::new(Dir::open(&self.root).await?);
        *self.dir.borrow_mut() = Some(dir.clone());
        Ok(dir)
    }

    /// What `path` (relative, checked) is: from the cache while fresh, else from the disk.
    async fn find(&self, dir: &Dir, path: &str) -> Found {
        let now = Instant::now();
        if let Some(found) = self.cache.borrow().fresh(path, now) {
            return found;
        }
        let rel = if path.is_empty() { "." } else { path };
        let found = match dir.metadata(rel).await {
            Err(e) => Found::Missing(e.raw_os_error().unwrap_or(libc::EIO)),
            Ok(meta) if meta.is_dir() => Found::Dir,
            Ok(meta) if !meta.is_file() => Found::Missing(EACCES),
            Ok(meta) => {
                // The same file as cached: keep its descriptor or bytes.
                let same = self
                    .cache
                    .borrow()
                    .entries
                    .get(path)
                    .and_then(|e| match &e.found {
                        Found::File(f) if f.meta == meta => Some(f.clone()),
                        _ => None,
                    });
                match same {
                    Some(f) => Found::File(f),
                    None => match load(dir, rel).await {
                        Ok(f) => Found::File(f),
                        Err(e) => Found::Missing(e.raw_os_error().unwrap_or(libc::EIO)),
                    },
                }
            }
        };
        self.cache.borrow_mut().put(path, found.clone(), now);
        found
    }
}

/// Opens the file at `rel`, reading it whole when it is small.
async fn load(dir: &Dir, rel: &str) -> std::io::Result<FileInfo> {
    let file = dir.open_file(rel).await?;
    // What was opened may differ from what was stat'ed: the open file's own metadata counts.
    let meta = file.metadata().await?;
    let body = if meta.len <= CACHED_FILE_BYTES_MAX {
        let mut bytes = vec![0u8; meta.len as usize];
        let n = file.read_exact_at(&mut bytes, 0).await?;
        bytes.truncate(n);
        Body::Memory(bytes.into())
    } else {
        Body::Open(Rc::new(file))
    };
    let since = meta
        .modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    // The inode and the modification time to the nanosecond: two versions written within
    // one second, or a file replaced by another of the same size and time, differ.
    let (secs, nanos) = (since.as_secs(), since.subsec_nanos());
    Ok(FileInfo {
        content_type: mime_guess::from_path(rel)
            .first_raw()
            .unwrap_or("application/octet-stream"),
        etag: format!("\"{:x}-{secs:x}.{nanos:x}-{:x}\"", meta.ino, meta.len).into(),
        modified: httpdate::fmt_http_date(meta.modified).into(),
        meta,
        body,
    })
}

/// Which of `codings` the client's `Accept-Encoding` takes (listed without `q=0`), in one
/// pass over the field.
fn accepted<const N: usize>(req: &OwnedRequest, codings: [&str; N]) -> [bool; N] {
    let mut taken = [false; N];
    let Some(value) = req.header("accept-encoding") else {
        return taken;
    };
    let value = String::from_utf8_lossy(value);
    for item in value.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let Some(i) = codings.iter().position(|c| name.eq_ignore_ascii_case(c)) else {
            continue;
        };
        let refused = parts.any(|p| {
            // `q` is case-insensitive (RFC 9110 section 12.4.2).
            let p = p.trim();
            p.get(..2)
                .filter(|k| k.eq_ignore_ascii_case("q="))
                .and_then(|_| p[2..].trim().parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        taken[i] = !refused;
    }
    taken
}

/// Whether the request's validators say the client has this version (`304`).
fn not_modified(req: &OwnedRequest, f: &FileInfo) -> bool {
    if let Some(tags) = req.header("if-none-match") {
        let tags = String::from_utf8_lossy(tags);
        let ours = f.etag.trim_start_matches("W/");
        return tags.split(',').any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == ours
        });
    }
    let Some(since) = req.header("if-modified-since") else {
        return false;
    };
    let Ok(since) = httpdate::parse_http_date(&String::from_utf8_lossy(since)) else {
        return false;
    };
    // HTTP dates have whole seconds.
    let modified = f
        .meta
        .modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let since = since
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    modified <= since
}

/// What a `Range` field asks of a body of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ranged {
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// Parses `Range` (one `bytes` range; several, or another unit, give the whole body).
fn range(value: &str, len: u64) -> Ranged {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ranged::Whole;
    };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ranged::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), num(first), num(last)) {
        // `-N`: the last N bytes.
        (true, _, Some(n)) if n > 0 && len > 0 => Ranged::Part(len.saturating_sub(n), len - 1),
        (true, _, Some(_)) => Ranged::Unsatisfiable,
        (false, Some(a), _) if a >= len => Ranged::Unsatisfiable,
        (false, Some(a), None) if last.trim().is_empty() => Ranged::Part(a, len - 1),
        (false, Some(a), Some(b)) if b >= a => Ranged::Part(a, b.min(len - 1)),
        _ => Ranged::Whole,
    }
}

/// `301` to the same path with a `/` added (the query kept).
fn redirect_to_slash(req: &OwnedRequest, mut res: Response) -> Response {
    let path = req.original_target().split('?').next().unwrap_or("/");
    let mut location = format!("{path}/");
    if let Some(q) = req.query() {
        location.push('?');
        location.push_str(q);
    }
    res.status(301)
        .header("Location", location)
        .header("Content-Type", "text/plain")
        .body("Moved Permanently\n");
    res
}

/// The answer to one request.
async fn serve(inner: Rc<Inner>, req: OwnedRequest) -> Response {
    let mut res = Response::new();
    match req.method() {
        "GET" | "HEAD" => {}
        "OPTIONS" => {
            res.status(204).header("Allow", "GET, HEAD, OPTIONS");
            return res;
        }
        _ => {
            res.status(405)
                .header("Allow", "GET, HEAD, OPTIONS")
                .header("Content-Type", "text/plain")
                .body("Method Not Allowed\n");
            return res;
        }
    }
    let path = req.path();
    let rel = match relative_path(path) {
        Ok(rel) => rel,
        Err(e) => {
            res.status(400)
                .header("Content-Type", "text/plain")
                .body(format!("Bad Request: the path has {e}\n"));
            return res;
        }
    };
    let dir = match inner.dir().await {
        Ok(dir) => dir,
        Err(e) => {
            crate::log::log_limited!("static root {}: {e}", inner.root.display());
            res.status(500).body("Internal Server Error\n");
            return res;
        }
    };
    // The mount's own prefix without its slash (`/static` for `--static /static=DIR`) names
    // the root directory, whose relative links need the slash.
    let original_path = req.original_target().split('?').next().unwrap_or("/");
    if rel.is_empty() && !original_path.ends_with('/') {
        return redirect_to_slash(&req, res);
    }
    let wants_dir = path.ends_with('/') || rel.is_empty();
    let target = match (wants_dir, rel.is_empty()) {
        (true, true) => "index.html".to_string(),
        (true, false) => format!("{rel}/index.html"),
        (false, _) => rel,
    };
    let file = match inner.find(&dir, &target).await {
        Found::File(f) => f,
        // `/docs` names a directory: its index is at `/docs/`.
        Found::Dir if !wants_dir => return redirect_to_slash(&req, res),
        Found::Missing(EACCES) => {
            res.status(403)
                .header("Content-Type", "text/plain")
                .body("Forbidden\n");
            return res;
        }
        Found::Dir | Found::Missing(_) => {
            res.status(404)
                .header("Content-Type", "text/plain")
                .body("Not Found\n");
            return res;
        }
    };
    // A pre-compressed variant the client takes, when one is beside the file.
    let content_type = file.content_type;
    let mut chosen = (file, None);
    let takes = accepted(&req, ["br", "gzip"]);
    for ((ext, coding), takes) in [("br", "br"), ("gz", "gzip")].into_iter().zip(takes) {
        if takes {
            if let Found::File(v) = inner.find(&dir, &format!("{target}.{ext}")).await {
                chosen = (v, Some(coding));
                break;
            }
        }
    }
    let (file, coding) = chosen;
    // The validators go on every answer about this file, 304 and 416 included.
    res.header("ETag", &*file.etag)
        .header("Last-Modified", &*file.modified)
        .header("Vary", "Accept-Encoding");
    if not_modified(&req, &file) {
        res.status(304);
        return res;
    }
    let len = file.meta.len;
    let mut ranged = match req.header("range") {
        Some(r) if req.method() == "GET" => range(&String::from_utf8_lossy(r), len),
        _ => Ranged::Whole,
    };
    if let Some(tag) = req.header("if-range") {
        // A range of another version is the whole of this one.
        let tag = String::from_utf8_lossy(tag);
        if tag.trim() != &*file.etag && tag.trim() != &*file.modified {
            ranged = Ranged::Whole;
        }
    }
    if ranged == Ranged::Unsatisfiable {
        res.status(416)
            .header("Content-Range", format!("bytes */{len}"))
            .header("Content-Type", "text/plain")
            .body("Range Not Satisfiable\n");
        return res;
    }
    res.header("Content-Type", content_type)
        .header("Accept-Ranges", "bytes");
    if let Some(coding) = coding {
        res.header("Content-Encoding", coding);
    }
    let (start, end) = match ranged {
        Ranged::Whole => (0, len),
        Ranged::Part(a, b) => {
            res.status(206)
                .header("Content-Range", format!("bytes {a}-{b}/{len}"));
            (a, b + 1)
        }
        Ranged::Unsatisfiable => unreachable!("answered above"),
    };
    match file.body {
        Body::Memory(bytes) => {
            let (a, b) = (start as usize, (end as usize).min(bytes.len()));
            res.body(&bytes[a.min(b)..b]);
        }
        Body::Open(f) => {
            res.stream(Some(end - start), move |mut body| async move {
                body.send_file(&f, start, end - start).await
            });
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_way_out_is_refused() {
        let refused = [
            ("/..", PathError::DotDot),
            ("/a/../..", PathError::DotDot),
            ("/a/%2e%2e/b", PathError::DotDot),
            ("/%2E%2e", PathError::DotDot),
            ("/.%2e/x", PathError::DotDot),
            ("/a%2f..%2fb", PathError::EncodedSlash),
            ("/a%2Fb", PathError::EncodedSlash),
            ("/a%00b", PathError::Nul),
            ("/a\0b", PathError::Nul),
            ("/a%zz", PathError::BadEscape),
            ("/a%2", PathError::BadEscape),
            ("/%ff", PathError::NotUtf8),
        ];
        for (path, why) in refused {
            assert_eq!(relative_path(path), Err(why), "{path:?}");
        }
        assert_eq!(
            relative_path(&format!("/{}", "a".repeat(PATH_BYTES_MAX + 1))),
            Err(PathError::TooLong)
        );
        assert_eq!(
            relative_path(&format!("/{}", "a".repeat(PATH_BYTES_MAX))).map(|p| p.len()),
            Ok(PATH_BYTES_MAX)
        );
    }

    #[test]
    fn the_cache_stays_within_its_bounds_and_evicts_the_oldest() {
        let mut cache = Cache::default();
        let now = Instant::now();
        let small = |n: usize| {
            Found::File(FileInfo {
                meta: Metadata {
                    len: n as u64,
                    mode: 0,
                    modified: SystemTime::UNIX_EPOCH,
                    ino: 0,
                    dev: 0,
                },
                content_type: "application/octet-stream",
                etag: "\"x\"".into(),
                modified: "".into(),
                body: Body::Memory(vec![0u8; n].into()),
            })
        };
        for i in 0..CACHE_ENTRIES_MAX + 100 {
            cache.put(&format!("f{i}"), Found::Missing(2), now);
            // Some keys are put again and again: their old pairs go stale.
            cache.put("hot", Found::Dir, now);
        }
        assert_eq!(cache.entries.len(), CACHE_ENTRIES_MAX);
        assert!(cache.order.len() <= 2 * CACHE_ENTRIES_MAX + 1);
        assert!(cache.entries.contains_key("hot"));
        assert!(!cache.entries.contains_key("f0"), "the oldest went first");
        // Bytes: files in memory count, and the total stays under its bound.
        let big = CACHE_BYTES_MAX / 4 + 1;
        for i in 0..6 {
            cache.put(&format!("big{i}"), small(big), now);
            assert!(cache.bytes <= CACHE_BYTES_MAX);
        }
        let held: usize = cache.entries.values().map(|e| memory_of(&e.found)).sum();
        assert_eq!(held, cache.bytes);
        assert!(!cache.entries.contains_key("big0") && cache.entries.contains_key("big5"));
    }

    #[test]
    fn ranges_within_at_and_past_the_end() {
        use Ranged::*;
        let cases = [
            ("bytes=0-9", Part(0, 9)),
            ("bytes=5-", Part(5, 99)),
            ("bytes=99-", Part(99, 99)),
            ("bytes=100-", Unsatisfiable),
            ("bytes=90-1000", Part(90, 99)),
            ("bytes=-10", Part(90, 99)),
            ("bytes=-1000", Part(0, 99)),
            ("bytes=-0", Unsatisfiable),
            ("bytes=5-4", Whole),
            ("bytes=0-1,4-5", Whole),
            ("items=0-1", Whole),
            ("bytes=x-1", Whole),
            ("bytes=", Whole),
        ];
        for (value, want) in cases {
            assert_eq!(range(value, 100), want, "{value}");
        }
        assert_eq!(range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(range("bytes=-5", 0), Unsatisfiable);
    }

    #[test]
    fn names_are_decoded_and_joined_below_the_root() {
        let ok = [
            ("/", ""),
            ("", ""),
            ("//a///b/", "a/b"),
            ("/./a/./b", "a/b"),
            ("/a..b/...", "a..b/..."),
            ("/%E2%82%AC.txt", "€.txt"),
            ("/a%20b", "a b"),
            ("/a\\..\\b", "a\\..\\b"),
        ];
        for (path, rel) in ok {
            assert_eq!(relative_path(path).as_deref(), Ok(rel), "{path:?}");
        }
    }
}
