//! The master's dashboard (`/` on the metrics listener) in a real headless browser
//! (Debian's `chromium`, which `.ci/run` installs): the page loads with no console message
//! and no script error, and its charts show the load the test drives.

mod common;

use common::load::{Load, Style};
use common::metrics::{metrics_addr, scrape};
use common::{wait_until, Server};
use std::process::Command;

/// The `data-points` and `data-max` of the chart `id` in the dumped page.
fn chart(dom: &str, id: &str) -> (u64, f64) {
    let at = dom
        .find(&format!("id=\"svg-{id}\""))
        .unwrap_or_else(|| panic!("no chart {id} in the page:\n{dom}"));
    let tag = &dom[at..at + dom[at..].find('>').unwrap()];
    let attr = |name: &str| -> String {
        let key = format!("{name}=\"");
        let start = tag.find(&key).unwrap_or_else(|| panic!("{name} in {tag}")) + key.len();
        tag[start..start + tag[start..].find('"').unwrap()].to_string()
    };
    (
        attr("data-points").parse().unwrap(),
        attr("data-max").parse().unwrap(),
    )
}

#[test]
fn the_dashboard_loads_without_errors_and_plots_the_load() {
    let server = Server::start(&["--workers", "2", "--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    let (status, page) = scrape(metrics, "/");
    assert_eq!(status, 200);
    assert!(
        page.contains("<svg") && !page.contains("src=\"http"),
        "self-contained"
    );
    let load = Load::start(server.addr, 4, Style::KeepAlive);
    // The rates come from the workers' once-a-second reports: wait for two under load.
    wait_until("a rate in the sample", || {
        let (_, json) = scrape(metrics, "/dashboard.json");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["requests_per_s"].as_f64().unwrap() > 0.0)
    });
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            // Virtual time: the page's one-second polls run at once, each a real fetch.
            "--virtual-time-budget=4000",
            "--dump-dom",
            &format!("http://{metrics}/"),
        ])
        .output()
        .expect("chromium (apt-get install chromium; .ci/run installs it)");
    load.stop();
    assert!(out.status.success(), "{out:?}");
    let dom = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    let errors = dom
        .split("id=\"errors\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the errors element");
    assert_eq!(errors, "", "script errors on the page");
    assert!(dom.contains("2 workers"), "the summary: {dom}");
    for id in ["rps", "conns", "cpu", "rss", "enters", "completions"] {
        let (points, max) = chart(&dom, id);
        assert!(points >= 2, "{id}: {points} points");
        assert!(max > 0.0, "{id}: the load shows ({max})");
    }
    // One row per worker in the slots' table.
    assert_eq!(dom.matches("<td>ready</td>").count(), 2, "{dom}");
}
