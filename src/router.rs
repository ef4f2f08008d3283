//! Routing by method and path, Express-like: `/users/:id`, a catch-all `/files/*path`, `404`
//! and `405` with `Allow`, sync and async routes side by side, and handlers mounted under a
//! prefix. Paths are matched by `matchit` (the matcher axum uses), a radix tree: a lookup
//! costs the path's length, not the number of routes.
//!
//! A sync route is called in place, on the receive buffer, as a [`Handler`] served alone is.
//! An async route is answered by a future, as [`Async`](crate::Async) is, with one heap
//! allocation per request for the boxed future (routes differ in their future types); the
//! path is matched once for the decision and once more on the owned request.
//!
//! See [`Router`]'s example.

use crate::handler::Handled;
use crate::http::request::Routed;
use crate::{AsyncHandler, Handler, OwnedRequest, Request, Response, WorkerInfo};
use std::future::Future;
use std::pin::Pin;

/// Route parameters per route, at most (a route with more is refused).
///
/// # Examples
///
/// ```
/// # use ringmaster::router::PARAMS_MAX;
/// # use ringmaster::{HelloWorld, Router};
/// let pattern: String = (0..=PARAMS_MAX).map(|i| format!("/:p{i}")).collect();
/// assert!(Router::new().try_route("GET", &pattern, HelloWorld).is_err());
/// ```
pub const PARAMS_MAX: usize = 8;

/// The catch-all parameter a mount adds to its prefix.
const MOUNT_REST: &str = "__ringmaster_mount_rest";

/// The future of an async route.
///
/// See [`Router`]'s example, whose `/wait` route is async.
pub type RouteFuture = Pin<Box<dyn Future<Output = Response>>>;

/// A request handler, Express-like: routes by method and path pattern, each a sync
/// [`Handler`] or an async one ([`Async`](crate::Async)), and handlers mounted under a prefix.
/// Serve it with [`Server::new`](crate::Server::new).
///
/// ```no_run
/// use ringmaster::{Async, OwnedRequest, Request, Response, Router, Server};
///
/// let router = Router::new()
///     .get("/", |_: &Request<'_>, res: &mut Response| {
///         res.body("home");
///     })
///     .get("/users/:id", |req: &Request<'_>, res: &mut Response| {
///         res.body(format!("user {}", req.param("id").unwrap_or("")));
///     })
///     .post("/wait", Async(|_req: OwnedRequest| async {
///         ringmaster::rt::sleep(std::time::Duration::from_millis(10)).await;
///         let mut res = Response::new();
///         res.body("waited");
///         res
///     }));
/// Server::new(router).run().unwrap();
/// ```
///
/// Patterns: a segment `:name` matches one segment (`/users/:id`); `*name` at the end matches
/// the rest, slashes included, and at least one byte (`/files/*path`); matchit's own syntax
/// (`{name}`, `{*name}`) is accepted too. Static segments win over parameters, whatever the
/// order the routes were added in. A path that matches no route gets `404` (or the
/// [`fallback`](Router::fallback)); one whose route lacks the method gets `405` with `Allow`.
/// `HEAD` is answered by the `GET` route when there is no `HEAD` route (the body is left
/// out), and `OPTIONS` by `204` with `Allow` when there is no `OPTIONS` route.
///
/// Parameter values are given as sent (still percent-encoded), through
/// [`Request::param`] and [`OwnedRequest::param`].
///
/// # Panics
///
/// Adding a route panics when its pattern is invalid or conflicts with another route's
/// (`/a/:x` and `/a/:y`), naming both, as axum does: a program's routes are fixed, and a
/// conflict is a bug to see at start. [`Router::try_route`] returns the error instead.
#[derive(Default)]
pub struct Router {
    paths: matchit::Router<usize>,
    /// Indexed by the values in `paths`.
    endpoints: Vec<Endpoint>,
    fallback: Option<Route>,
    /// The mounts whose answers are counted, for status and metrics.
    counted: crate::MountTable,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field(
                "patterns",
                &self
                    .endpoints
                    .iter()
                    .map(|e| &e.pattern)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The routes of one path pattern.
struct Endpoint {
    /// As given, for messages.
    pattern: String,
    /// `None` for a mount: every method.
    methods: Vec<(String, Route)>,
    mount: Option<Mount>,
}

/// A handler mounted under a prefix.
struct Mount {
    route: Route,
    /// The prefix's length, taken off the target the handler sees.
    base: usize,
}

/// One route's handler.
enum Route {
    Sync(Box<dyn Handler>),
    Async(Box<dyn DynAsync>),
}

/// An [`AsyncHandler`] with its future boxed, so that routes of different types share a table.
trait DynAsync: 'static {
    fn call(&self, req: OwnedRequest) -> RouteFuture;
    fn start(&self, worker: &WorkerInfo) -> Result<(), String>;
    fn on_message(&self, bytes: &[u8]);
    fn streams_body(&self, req: &Request<'_>) -> bool;
}

impl<A: AsyncHandler> DynAsync for A {
    fn call(&self, req: OwnedRequest) -> RouteFuture {
        Box::pin(AsyncHandler::call(self, req))
    }

    fn start(&self, worker: &WorkerInfo) -> Result<(), String> {
        AsyncHandler::start(self, worker)
    }

    fn on_message(&self, bytes: &[u8]) {
        AsyncHandler::on_message(self, bytes)
    }

    fn streams_body(&self, req: &Request<'_>) -> bool {
        AsyncHandler::streams_body(self, req)
    }
}

/// What a route can be made of: a [`Handler`], or an [`AsyncHandler`] in
/// [`Async`](crate::Async).
///
/// See [`Router`]'s example.
pub trait IntoRoute: into_route::Sealed {
    #[doc(hidden)]
    fn into_route(self) -> RouteBox;
}

/// A route's handler, boxed (what [`IntoRoute`] makes).
///
/// See [`Router`](crate::Router)'s example.
#[doc(hidden)]
pub struct RouteBox(Route);

mod into_route {
    pub trait Sealed {}
    impl<H: crate::Handler> Sealed for H {}
    impl<A: crate::AsyncHandler> Sealed for crate::Async<A> {}
}

impl<H: Handler> IntoRoute for H {
    fn into_route(self) -> RouteBox {
        RouteBox(Route::Sync(Box::new(self)))
    }
}

impl<A: AsyncHandler> IntoRoute for crate::Async<A> {
    fn into_route(self) -> RouteBox {
        RouteBox(Route::Async(Box::new(self.0)))
    }
}

/// Why a route was refused.
///
/// See [`Router::try_route`]'s example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    /// The pattern as given.
    pub pattern: String,
    /// Why, in words.
    pub why: String,
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "route {:?}: {}", self.pattern, self.why)
    }
}

impl std::error::Error for RouteError {}

/// `pattern` in matchit's syntax: `:name` → `{name}`, a last `*name` → `{*name}` (a bare `*`
/// → `{*wildcard}`); a pattern with `{` already is taken as matchit's. Checks what matchit
/// leaves open: a leading `/`, at most [`PARAMS_MAX`] parameters, ASCII names.
fn to_matchit(pattern: &str) -> Result<String, String> {
    if !pattern.starts_with('/') {
        return Err("a pattern starts with /".into());
    }
    let converted = if pattern.contains('{') {
        pattern.to_string()
    } else {
        let segments: Vec<&str> = pattern.split('/').collect();
        let last = segments.len() - 1;
        let mut out = Vec::with_capacity(segments.len());
        for (i, seg) in segments.iter().enumerate() {
            if let Some(name) = seg.strip_prefix(':') {
                out.push(format!("{{{name}}}"));
            } else if let Some(name) = seg.strip_prefix('*') {
                if i != last {
                    return Err("a catch-all (*name) ends the pattern".into());
                }
                let name = if name.is_empty() { "wildcard" } else { name };
                out.push(format!("{{*{name}}}"));
            } else {
                out.push(seg.to_string());
            }
        }
        out.join("/")
    };
    let mut params = 0;
    let mut rest = converted.as_str();
    while let Some(open) = rest.find('{') {
        if rest[open..].starts_with("{{") {
            rest = &rest[open + 2..];
            continue;
        }
        let close = rest[open..]
            .find('}')
            .ok_or("a parameter's { is not closed")?;
        let name = rest[open + 1..open + close].trim_start_matches('*');
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!(
                "parameter name {name:?}: letters, digits, _ and - only"
            ));
        }
        params += 1;
        rest = &rest[open + close + 1..];
    }
    if params > PARAMS_MAX {
        return Err(format!(
            "{params} parameters; at most {PARAMS_MAX} (router::PARAMS_MAX)"
        ));
    }
    Ok(converted)
}

impl Router {
    /// A router with no routes: every request gets `404`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{HelloWorld, Router, Server};
    ///
    /// // Hello World at `/`, `404` everywhere else.
    /// let router = Router::new().get("/", HelloWorld);
    /// let server = Server::new(router);
    /// # let _ = server;
    /// ```
    pub fn new() -> Router {
        Router::default()
    }

    /// Adds `handler` for `method` requests to paths matching `pattern`; see [`Router`] for
    /// the patterns and the panics.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response, Router};
    ///
    /// fn search(req: &Request<'_>, res: &mut Response) {
    ///     res.body(format!("results for {}\n", req.query().unwrap_or("")));
    /// }
    ///
    /// // A method with no shorthand of its own (WebDAV's, here).
    /// let router = Router::new().route("SEARCH", "/docs", search);
    /// # let _ = router;
    /// ```
    pub fn route(mut self, method: &str, pattern: &str, handler: impl IntoRoute) -> Router {
        if let Err(e) = self.try_route(method, pattern, handler) {
            panic!("{e}");
        }
        self
    }

    /// Like [`Router::route`], returning the error rather than panicking.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{HelloWorld, Router};
    ///
    /// let mut router = Router::new();
    /// router.try_route("GET", "/users/:id", HelloWorld).unwrap();
    /// // Another name for the same parameter conflicts; the error names the pattern.
    /// let err = router.try_route("GET", "/users/:name", HelloWorld).unwrap_err();
    /// assert_eq!(err.pattern, "/users/:name");
    /// assert!(router.try_route("GET", "users", HelloWorld).is_err()); // no leading `/`
    /// ```
    pub fn try_route(
        &mut self,
        method: &str,
        pattern: &str,
        handler: impl IntoRoute,
    ) -> Result<(), RouteError> {
        let err = |why: String| RouteError {
            pattern: pattern.to_string(),
            why,
        };
        if method.is_empty() || !method.bytes().all(crate::http::response::is_token_byte) {
            return Err(err(format!("method {method:?} is not a token")));
        }
        let RouteBox(route) = handler.into_route();
        let converted = to_matchit(pattern).map_err(err)?;
        let index = self.endpoint(&converted, pattern).map_err(err)?;
        let endpoint = &mut self.endpoints[index];
        if endpoint.mount.is_some() {
            return Err(err(format!("{pattern:?} is a mount")));
        }
        if endpoint.methods.iter().any(|(m, _)| m == method) {
            return Err(err(format!("{method} {pattern} is already routed")));
        }
        endpoint.methods.push((method.to_string(), route));
        Ok(())
    }

    /// The endpoint of `converted`, added when new.
    fn endpoint(&mut self, converted: &str, pattern: &str) -> Result<usize, String> {
        if let Ok(found) = self.paths.at(converted) {
            // The same pattern (a static one, or one whose parameters match themselves).
            if self.endpoints[*found.value].pattern == pattern {
                return Ok(*found.value);
            }
        }
        let index = self.endpoints.len();
        self.paths
            .insert(converted, index)
            .map_err(|e| e.to_string())?;
        self.endpoints.push(Endpoint {
            pattern: pattern.to_string(),
            methods: Vec::new(),
            mount: None,
        });
        Ok(index)
    }

    /// `GET` requests to `pattern`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response, Router};
    ///
    /// fn user(req: &Request<'_>, res: &mut Response) {
    ///     res.body(format!("user {}\n", req.param("id").unwrap_or("")));
    /// }
    ///
    /// // `HEAD /users/7` is answered by this route too, without the body.
    /// let router = Router::new().get("/users/:id", user);
    /// # let _ = router;
    /// ```
    pub fn get(self, pattern: &str, handler: impl IntoRoute) -> Router {
        self.route("GET", pattern, handler)
    }

    /// `POST` requests to `pattern`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response, Router};
    ///
    /// fn create(req: &Request<'_>, res: &mut Response) {
    ///     // The whole body has arrived (at most `Limits::request_body_bytes_max`).
    ///     res.status(201).body(format!("stored {} bytes\n", req.body().len()));
    /// }
    ///
    /// let router = Router::new().post("/notes", create);
    /// # let _ = router;
    /// ```
    pub fn post(self, pattern: &str, handler: impl IntoRoute) -> Router {
        self.route("POST", pattern, handler)
    }

    /// `PUT` requests to `pattern`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response, Router};
    ///
    /// fn replace(req: &Request<'_>, res: &mut Response) {
    ///     let id = req.param("id").unwrap_or("");
    ///     res.body(format!("note {id}: {} bytes\n", req.body().len()));
    /// }
    ///
    /// let router = Router::new().put("/notes/:id", replace);
    /// # let _ = router;
    /// ```
    pub fn put(self, pattern: &str, handler: impl IntoRoute) -> Router {
        self.route("PUT", pattern, handler)
    }

    /// `DELETE` requests to `pattern`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response, Router};
    ///
    /// fn remove(_req: &Request<'_>, res: &mut Response) {
    ///     res.status(204);
    /// }
    ///
    /// // `GET /notes/7` gets `405` with `Allow: DELETE, OPTIONS`.
    /// let router = Router::new().delete("/notes/:id", remove);
    /// # let _ = router;
    /// ```
    pub fn delete(self, pattern: &str, handler: impl IntoRoute) -> Router {
        self.route("DELETE", pattern, handler)
    }

    /// `PATCH` requests to `pattern`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{OwnedRequest, Response, Router};
    ///
    /// // An async route: it may wait (on `rt`) before it answers.
    /// async fn update(req: OwnedRequest) -> Response {
    ///     let mut res = Response::new();
    ///     res.body(format!("note {} updated\n", req.param("id").unwrap_or("")));
    ///     res
    /// }
    ///
    /// let router = Router::new().patch("/notes/:id", ringmaster::Async(update));
    /// # let _ = router;
    /// ```
    pub fn patch(self, pattern: &str, handler: impl IntoRoute) -> Router {
        self.route("PATCH", pattern, handler)
    }

    /// Every request whose path is `prefix` or lies below it (`/api`, `/api/`, `/api/x`, not
    /// `/apix`), whatever its method, goes to `handler`, which sees the target without the
    /// prefix (`/api/x?y` as `/x?y`; [`Request::base`] gives the prefix,
    /// [`Request::original_target`] the whole), as Express's `app.use(prefix, handler)`.
    /// Static routes under the prefix added to this router win over the mount (a route with
    /// a parameter right below the prefix, `/api/:x`, conflicts with it: matchit cannot tell
    /// the two apart). `prefix` is a static path (no parameters); `/` mounts at the root, as a
    /// fallback for every path.
    ///
    /// # Panics
    ///
    /// As [`Router::route`]; [`Router::try_mount`] returns the error instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{Request, Response, Router};
    ///
    /// fn api(req: &Request<'_>, res: &mut Response) {
    ///     // For `/api/v1/users`: `/v1/users` below the base `/api`.
    ///     res.body(format!("{} below {}\n", req.path(), req.base()));
    /// }
    ///
    /// let router = Router::new().mount("/api", api);
    /// # let _ = router;
    /// ```
    pub fn mount(mut self, prefix: &str, handler: impl IntoRoute) -> Router {
        if let Err(e) = self.try_mount(prefix, handler) {
            panic!("{e}");
        }
        self
    }

    /// Like [`Router::mount`], returning the error rather than panicking.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{HelloWorld, Router};
    ///
    /// let mut router = Router::new();
    /// assert!(router.try_mount("/api", HelloWorld).is_ok());
    /// // A prefix is a static path.
    /// let err = router.try_mount("/users/:id", HelloWorld).unwrap_err();
    /// assert!(err.why.contains("static path"), "{err}");
    /// ```
    pub fn try_mount(&mut self, prefix: &str, handler: impl IntoRoute) -> Result<(), RouteError> {
        let err = |why: String| RouteError {
            pattern: prefix.to_string(),
            why,
        };
        if !prefix.starts_with('/') {
            return Err(err("a prefix starts with /".into()));
        }
        if prefix.contains(['{', '}', ':', '*', '?', '#']) {
            return Err(err(
                "a prefix is a static path: no parameters, query or fragment".into(),
            ));
        }
        let prefix = prefix.trim_end_matches('/');
        let RouteBox(route) = handler.into_route();
        let exact = if prefix.is_empty() { "/" } else { prefix };
        let patterns = [
            exact.to_string(),
            format!("{prefix}/"),
            format!("{prefix}/{{*{MOUNT_REST}}}"),
        ];
        let index = self.endpoints.len();
        // All three patterns or none: a copy takes them, and replaces the table only once
        // every one went in (a conflict on the last must not leave the first behind).
        let mut paths = self.paths.clone();
        for p in patterns.iter().collect::<std::collections::BTreeSet<_>>() {
            paths
                .insert(p.as_str(), index)
                .map_err(|e| err(e.to_string()))?;
        }
        self.paths = paths;
        self.endpoints.push(Endpoint {
            pattern: exact.to_string(),
            methods: Vec::new(),
            mount: Some(Mount {
                route,
                base: prefix.len(),
            }),
        });
        Ok(())
    }

    /// Like [`Router::try_mount`], with the handler's answers counted in `mount` (a
    /// `--static` or `--proxy` mount), which joins the router's table; refused past
    /// [`MOUNTS_MAX`](crate::ipc::MOUNTS_MAX) mounts.
    pub(crate) fn try_mount_counted<A>(
        &mut self,
        mount: crate::mounts::Mount,
        handler: A,
    ) -> Result<(), RouteError>
    where
        A: AsyncHandler,
        A::Future: Unpin,
    {
        if self.counted.is_full() {
            return Err(RouteError {
                pattern: mount.prefix.clone(),
                why: format!("more than {} mounts", crate::ipc::MOUNTS_MAX),
            });
        }
        let prefix = mount.prefix.clone();
        self.try_mount(&prefix, crate::Async(mount.count(handler)))?;
        self.counted.push(mount);
        Ok(())
    }

    /// What answers requests that no route matches (instead of `404`), as a mount at `/`
    /// would but without taking part in matching.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::{HelloWorld, Request, Response, Router};
    ///
    /// fn not_found(req: &Request<'_>, res: &mut Response) {
    ///     res.status(404).body(format!("nothing at {}\n", req.path()));
    /// }
    ///
    /// let router = Router::new().get("/", HelloWorld).fallback(not_found);
    /// # let _ = router;
    /// ```
    pub fn fallback(mut self, handler: impl IntoRoute) -> Router {
        self.fallback = Some(handler.into_route().0);
        self
    }

    /// Finds the route for `method` and `path`: the route, its parameters (copied into
    /// `params`, their count returned) and a mount's prefix length; or what to answer.
    fn find<'r, 'p>(
        &'r self,
        method: &str,
        path: &'p str,
        params: &mut [(&'r str, &'p str); PARAMS_MAX],
    ) -> Found<'r> {
        let Ok(matched) = self.paths.at(path) else {
            return match &self.fallback {
                Some(route) => Found::Route {
                    route,
                    params: 0,
                    base: 0,
                },
                None => Found::Nothing,
            };
        };
        let endpoint = &self.endpoints[*matched.value];
        let mut n = 0;
        for (name, value) in matched.params.iter() {
            if name == MOUNT_REST || n == PARAMS_MAX {
                continue;
            }
            params[n] = (name, value);
            n += 1;
        }
        if let Some(mount) = &endpoint.mount {
            return Found::Route {
                route: &mount.route,
                params: 0,
                base: mount.base,
            };
        }
        let by = |m: &str| endpoint.methods.iter().find(|(em, _)| em == m);
        let found = by(method).or_else(|| (method == "HEAD").then(|| by("GET")).flatten());
        match found {
            Some((_, route)) => Found::Route {
                route,
                params: n,
                base: 0,
            },
            None => Found::Refused(endpoint),
        }
    }
}

/// What a lookup found.
enum Found<'r> {
    Route {
        route: &'r Route,
        params: usize,
        base: usize,
    },
    /// The path matched; the method did not.
    Refused(&'r Endpoint),
    /// No route for the path, and no fallback.
    Nothing,
}

/// Answers what no route answers: `404`, or for a path whose routes lack the method, `204`
/// to `OPTIONS` and `405` to the rest, with `Allow`.
fn refuse(found: &Found<'_>, method: &str, res: &mut Response) {
    let Found::Refused(endpoint) = found else {
        res.status(404)
            .header("Content-Type", "text/plain")
            .body("Not Found\n");
        return;
    };
    let mut allow: Vec<&str> = endpoint.methods.iter().map(|(m, _)| m.as_str()).collect();
    if allow.contains(&"GET") && !allow.contains(&"HEAD") {
        allow.push("HEAD");
    }
    if !allow.contains(&"OPTIONS") {
        allow.push("OPTIONS");
    }
    let allow = allow.join(", ");
    if method == "OPTIONS" {
        res.status(204).header("Allow", allow);
        return;
    }
    res.status(405)
        .header("Allow", allow)
        .header("Content-Type", "text/plain")
        .body("Method Not Allowed\n");
}

impl crate::Serve for Router {
    type Future = RouteFuture;
    const ASYNC: bool = true;
    const ONLY_ASYNC: bool = false;

    fn handle_now(&self, req: &Request<'_>, res: &mut Response) -> Handled {
        let mut params = [("", ""); PARAMS_MAX];
        let found = self.find(req.method(), req.path(), &mut params);
        match found {
            Found::Route {
                route: Route::Sync(handler),
                params: n,
                base,
            } => {
                let routed = Routed {
                    params: &params[..n],
                    base,
                };
                handler.handle(&req.routed(&routed), res);
                Handled::Answered
            }
            Found::Route {
                route: Route::Async(_),
                ..
            } => Handled::Deferred,
            refused => {
                refuse(&refused, req.method(), res);
                Handled::Answered
            }
        }
    }

    fn call_async(&self, mut req: OwnedRequest) -> RouteFuture {
        let mut params = [("", ""); PARAMS_MAX];
        let mut spans = [("", crate::http::owned::Span::default()); PARAMS_MAX];
        let (route, n, base) = {
            let path = req.path();
            match self.find(req.method(), path, &mut params) {
                Found::Route {
                    route: Route::Async(route),
                    params: n,
                    base,
                } => {
                    for (i, (name, value)) in params[..n].iter().enumerate() {
                        spans[i] = (*name, req.span_of(value).unwrap_or_default());
                    }
                    (route, n, base)
                }
                // `handle_now` found an async route for this same request.
                _ => unreachable!("an async route was found for the request"),
            }
        };
        req.set_routed(&spans[..n], base);
        route.call(req)
    }

    fn start_worker(&self, worker: &WorkerInfo) -> Result<(), String> {
        self.routes().try_for_each(|route| match route {
            Route::Sync(h) => h.start(worker),
            Route::Async(a) => a.start(worker),
        })
    }

    fn message(&self, bytes: &[u8]) {
        for route in self.routes() {
            match route {
                Route::Sync(h) => h.on_message(bytes),
                Route::Async(a) => a.on_message(bytes),
            }
        }
    }

    fn streams_body(&self, req: &Request<'_>) -> bool {
        let mut params = [("", ""); PARAMS_MAX];
        match self.find(req.method(), req.path(), &mut params) {
            Found::Route {
                route: Route::Async(route),
                params: n,
                base,
            } => {
                let routed = Routed {
                    params: &params[..n],
                    base,
                };
                route.streams_body(&req.routed(&routed))
            }
            _ => false,
        }
    }

    fn mounts(&self) -> Option<&crate::MountTable> {
        (!self.counted.is_empty()).then_some(&self.counted)
    }
}

impl Router {
    /// Every route's handler, the fallback's too.
    fn routes(&self) -> impl Iterator<Item = &Route> {
        self.endpoints
            .iter()
            .flat_map(|e| {
                e.methods
                    .iter()
                    .map(|(_, r)| r)
                    .chain(e.mount.as_ref().map(|m| &m.route))
            })
            .chain(self.fallback.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn express_patterns_become_matchit_patterns() {
        assert_eq!(to_matchit("/users/:id").unwrap(), "/users/{id}");
        assert_eq!(to_matchit("/a/:x/b/:y").unwrap(), "/a/{x}/b/{y}");
        assert_eq!(to_matchit("/files/*path").unwrap(), "/files/{*path}");
        assert_eq!(to_matchit("/files/*").unwrap(), "/files/{*wildcard}");
        assert_eq!(to_matchit("/users/{id}").unwrap(), "/users/{id}");
        assert!(to_matchit("users").is_err());
        assert!(to_matchit("/a/*x/b").is_err());
        assert!(to_matchit("/a/:").is_err());
        assert!(to_matchit("/a/:é").is_err());
        let nine = (0..9).map(|i| format!("/:p{i}")).collect::<String>();
        assert!(to_matchit(&nine).unwrap_err().contains("at most 8"));
        let eight = (0..8).map(|i| format!("/:p{i}")).collect::<String>();
        assert!(to_matchit(&eight).is_ok());
    }

    fn ok(_: &Request<'_>, _: &mut Response) {}

    #[test]
    fn conflicts_and_bad_input_are_errors_naming_the_route() {
        let mut r = Router::new().get("/a/:x", ok);
        let e = r.try_route("GET", "/a/:y", ok).unwrap_err();
        assert!(e.to_string().contains("/a/:y"), "{e}");
        let e = r.try_route("GET", "/a/:x", ok).unwrap_err();
        assert!(e.why.contains("already routed"), "{e}");
        assert!(r.try_route("POST", "/a/:x", ok).is_ok());
        assert!(r.try_route("G T", "/b", ok).is_err());
        assert!(r.try_mount("/m/:x", ok).is_err());
        assert!(r.try_mount("api", ok).is_err());
        assert!(r.try_mount("/api", ok).is_ok());
        assert!(r.try_mount("/api/", ok).is_err(), "the same mount twice");
        // A mount that conflicts on its last pattern leaves nothing behind.
        let mut r = Router::new().get("/x/:id", ok);
        assert!(r.try_mount("/x", ok).is_err());
        let mut params = [("", ""); PARAMS_MAX];
        assert!(matches!(r.find("GET", "/x", &mut params), Found::Nothing));
        assert!(r.try_route("GET", "/x", ok).is_ok());
    }

    #[test]
    #[should_panic(expected = "/a/:y")]
    fn a_conflicting_route_panics_at_build() {
        let _ = Router::new().get("/a/:x", ok).get("/a/:y", ok);
    }

    #[test]
    fn lookups_find_routes_parameters_mounts_and_refusals() {
        let r = Router::new()
            .get("/users/:id", ok)
            .get("/users/me", ok)
            .post("/users/:id", ok)
            .get("/files/*path", ok)
            .mount("/api", ok);
        let find = |m: &str, p: &str| {
            let mut params = [("", ""); PARAMS_MAX];
            match r.find(m, p, &mut params) {
                Found::Route {
                    params: n, base, ..
                } => {
                    let got: Vec<String> = params[..n]
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    format!("route {} base {base}", got.join(","))
                }
                Found::Refused(e) => format!("refused {}", e.pattern),
                Found::Nothing => "404".to_string(),
            }
        };
        assert_eq!(find("GET", "/users/7"), "route id=7 base 0");
        assert_eq!(find("POST", "/users/7"), "route id=7 base 0");
        assert_eq!(find("HEAD", "/users/7"), "route id=7 base 0");
        assert_eq!(find("GET", "/users/me"), "route  base 0");
        assert_eq!(find("DELETE", "/users/7"), "refused /users/:id");
        assert_eq!(find("GET", "/files/a/b.txt"), "route path=a/b.txt base 0");
        assert_eq!(find("GET", "/files/"), "404");
        assert_eq!(find("GET", "/api"), "route  base 4");
        assert_eq!(find("PUT", "/api/"), "route  base 4");
        assert_eq!(find("GET", "/api/x/y"), "route  base 4");
        assert_eq!(find("GET", "/apix"), "404");
        assert_eq!(find("GET", "/nothing"), "404");
    }
}
