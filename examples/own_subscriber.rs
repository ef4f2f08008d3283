//! A program that installs its own `tracing` subscriber before it runs the server: it gets
//! ringmaster's events (with their fields: `slot`, `pid`, `cpu`...) and its handler's, in
//! its own format, and ringmaster installs none of its own. Here the subscriber is a small
//! layer printing `SUB LEVEL TARGET span{k=v}: message key=value...`, one line each; a real
//! program would use `tracing_subscriber::fmt()`, a JSON layer and so on (one that writes
//! from the calling thread: the server refuses to fork with other threads running). Every
//! event of a worker happens in its span, `worker{slot=N pid=P}`.
//!
//! ```text
//! cargo run --example own_subscriber -- --listen 127.0.0.1:3000
//! curl localhost:3000/hello
//! ```

use ringmaster::{Request, Response, Server};
use std::fmt::Write as _;
use std::io::Write as _;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::SubscriberExt;

/// Prints each event as one line, after the spans it happened in.
struct Printer;

/// A span's fields as text, kept in its extensions.
struct SpanText(String);

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.0, " {value:?}");
            }
            name => {
                let _ = write!(self.0, " {name}={value:?}");
            }
        }
    }
}

impl<S> tracing_subscriber::Layer<S> for Printer
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Line(String::new());
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanText(fields.0));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        let mut line = Line(format!("SUB {} {}", meta.level(), meta.target()));
        for span in ctx
            .event_scope(event)
            .into_iter()
            .flat_map(|s| s.from_root())
        {
            let ext = span.extensions();
            let fields = ext.get::<SpanText>().map_or("", |t| t.0.trim_start());
            let _ = write!(line.0, " {}{{{fields}}}:", span.name());
        }
        event.record(&mut line);
        line.0.push('\n');
        let _ = std::io::stderr().write_all(line.0.as_bytes());
    }
}

fn main() {
    let subscriber = tracing_subscriber::registry().with(Printer);
    tracing::subscriber::set_global_default(subscriber).expect("the first subscriber");
    let server = Server::new(|req: &Request<'_>, res: &mut Response| {
        tracing::info!(path = req.path(), "handled");
        res.body("hello\n");
    });
    std::process::exit(ringmaster::cli::run(ringmaster::app!(), server));
}
