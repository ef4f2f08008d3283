//! `--config PATH`: the flags' settings from a TOML file, flags over the file, an unknown
//! key refused with its name, and the file read again at each reload for the new workers.

mod common;

use common::{control, exchange, one_error_line, wait_until, Server, TempDir};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory for one test's files, removed when dropped.
fn test_dir(name: &str) -> TempDir {
    TempDir::new("config", name)
}

/// Puts `text` at `name` in `dir` the way an editor or a deploy does: written beside it,
/// then renamed over it.
fn put(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    dir.replace(name, text, 0o644)
}

fn ringmaster(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ringmaster"))
        .args(args)
        .output()
        .unwrap()
}

fn get(server: &Server, target: &str) -> (u16, String) {
    let raw = format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n");
    let (res, _) = exchange(server.addr, raw.as_bytes());
    (res.status, String::from_utf8_lossy(&res.body).into_owned())
}

#[test]
fn the_file_sets_what_the_flags_do_and_a_flag_overrides_it() {
    let dir = test_dir("precedence");
    let config = dir.write(
        "app.toml",
        "# as the flags, without the dashes\nworkers = 1\nlisten = \"127.0.0.1:0\"\n\
         cpu-affinity = \"none\"\nexit-on-panic = true\n",
    );
    let config = config.to_str().unwrap();
    let server = Server::start(&["--config", config]);
    let line = server.wait_log("listening on 127.0.0.1:");
    assert!(line.contains("(1 workers"), "{line}");
    server.wait_log("cpu none");
    drop(server);
    // A flag given beats the file's key.
    let server = Server::start(&["--config", config, "--workers", "2"]);
    assert!(server.wait_log("listening on").contains("(2 workers"));
    // `probe` takes the file too.
    let out = ringmaster(&["probe", "--json", "--config", config]);
    assert!(out.status.success(), "{out:?}");
    drop(server);
    // `RINGMASTER_CONFIG` names the file where `--config` is not given, and a flag still
    // beats its keys.
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringmaster"));
    command.env("RINGMASTER_CONFIG", config);
    let server = Server::start_command(&mut command, 1);
    assert!(server
        .wait_log("listening on 127.0.0.1:")
        .contains("(1 workers"));
    server.wait_log("cpu none");
    drop(server);
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringmaster"));
    command
        .env("RINGMASTER_CONFIG", config)
        .args(["--workers", "2"]);
    let server = Server::start_command(&mut command, 2);
    assert!(server
        .wait_log("listening on 127.0.0.1:")
        .contains("(2 workers"));
    drop(server);
    // A value that starts with `-` is the setting's, not a flag of its own.
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringmaster"));
    command
        .current_dir(dir.path(""))
        .env("RINGMASTER_CONFIG", config)
        .env("RINGMASTER_ACCESS_LOG", "-dash.log");
    let mut server = Server::start_command(&mut command, 1);
    assert_eq!(get(&server, "/").0, 200);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    let log = std::fs::read_to_string(dir.path("-dash.log")).unwrap();
    assert_eq!(log.lines().count(), 1, "{log}");
}

#[test]
fn an_unknown_key_or_a_bad_value_is_one_line_naming_the_file_and_the_key() {
    let dir = test_dir("bad");
    for (text, says) in [
        ("wokers = 2\n", "unknown key `wokers`"),
        (
            "workers = \"many\"\n",
            "invalid value 'many' for '--workers <N|auto>'",
        ),
        ("exit-on-panic = \"yes\"\n", "`exit-on-panic` is a switch"),
        ("workers = 2\nworkers = 3\n", "duplicate key"),
    ] {
        let config = put(&dir, "bad.toml", text);
        let out = ringmaster(&[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {out:?}");
        let line = one_error_line(&out);
        assert!(
            line.contains(&format!("config file {}: ", config.display())) && line.contains(says),
            "{text:?}: {line}"
        );
    }
    let out = ringmaster(&["--config", dir.path("missing.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(one_error_line(&out).contains("missing.toml: No such file"));
}

/// A file `name` holding `text` in a new directory `sub`.
fn site(dir: &TempDir, sub: &str, text: &str) -> PathBuf {
    dir.write(&format!("{sub}/page.txt"), text);
    dir.path(sub)
}

fn mount(root: &Path) -> String {
    format!("static = [\"/files={}\"]\n", root.display())
}

#[test]
fn a_reload_runs_the_new_workers_with_the_file_as_it_is_then() {
    let dir = test_dir("reload");
    let (a, b) = (site(&dir, "a", "site a"), site(&dir, "b", "site b"));
    let config = put(&dir, "app.toml", &format!("workers = 2\n{}", mount(&a)));
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    assert_eq!(get(&server, "/files/page.txt"), (200, "site a".to_string()));

    put(&dir, "app.toml", &format!("workers = 2\n{}", mount(&b)));
    let answer = control(&server, "reload");
    assert!(answer.starts_with("ok: reloaded 2 workers"), "{answer}");
    assert!(!answer.contains("restart"), "{answer}");
    for _ in 0..10 {
        assert_eq!(get(&server, "/files/page.txt"), (200, "site b".to_string()));
    }
    // The master's own settings take a restart: the answer says which were not applied.
    put(&dir, "app.toml", &format!("workers = 1\n{}", mount(&b)));
    let answer = control(&server, "reload");
    assert!(
        answer.starts_with("ok: reloaded 2 workers")
            && answer.contains("; not applied until a restart: workers"),
        "{answer}"
    );
    assert_eq!(server.worker_pids().len(), 2);

    // A worker of that generation respawned later runs the same settings, whatever the
    // file says since.
    put(&dir, "app.toml", &format!("workers = 2\n{}", mount(&a)));
    let workers = server.worker_pids();
    // SAFETY (test): a signal to a worker of the server this test started.
    assert_eq!(unsafe { libc::kill(workers[0] as i32, libc::SIGKILL) }, 0);
    wait_until("the worker respawned", || {
        let now = server.worker_pids();
        now.len() == 2 && !now.contains(&workers[0])
    });
    server.wait_log_count("ready (pid", 7);
    for _ in 0..10 {
        assert_eq!(get(&server, "/files/page.txt"), (200, "site b".to_string()));
    }

    // A file the new workers refuse: the reload fails naming the key, and the workers
    // before serve on.
    put(&dir, "app.toml", &format!("wokers = 2\n{}", mount(&a)));
    let answer = control(&server, "reload");
    assert!(
        answer.starts_with("error: reload failed: the new worker 0 exited before it was ready")
            && answer.contains("unknown key `wokers`"),
        "{answer}"
    );
    assert_eq!(get(&server, "/files/page.txt"), (200, "site b".to_string()));
}

/// `ringmaster ARGS` with `env` set (and the test's own `RINGMASTER_*` none).
fn ringmaster_env(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringmaster"));
    command.args(args).envs(env.iter().copied());
    command
}

#[test]
fn the_environment_sits_between_the_file_and_the_flags_and_port_is_the_platforms() {
    let dir = test_dir("env");
    let config = put(&dir, "app.toml", "workers = 2\nlisten = \"127.0.0.1:0\"\n");
    let config = config.to_str().unwrap();
    // File 2, environment 1: the environment's.
    let env = [("RINGMASTER_WORKERS", "1")];
    let server = Server::start_command(&mut ringmaster_env(&["--config", config], &env), 1);
    assert!(server.wait_log("listening on").contains("(1 workers"));
    drop(server);
    // Environment 1, flag 2: the flag's.
    let mut command = ringmaster_env(&["--config", config, "--workers", "2"], &env);
    let server = Server::start_command(&mut command, 2);
    assert!(server.wait_log("listening on").contains("(2 workers"));
    drop(server);

    // PORT, as platforms set it: the port to listen on, on every address; a command run in
    // the same environment finds that server.
    let port = common::free_port().to_string();
    let env = [("PORT", port.as_str()), ("RINGMASTER_WORKERS", "1")];
    let server = Server::start_command(&mut ringmaster_env(&[], &env), 1);
    let line = server.wait_log("listening on");
    assert!(
        line.contains(&format!("listening on 0.0.0.0:{port} ")),
        "{line}"
    );
    let out = ringmaster_env(&["status"], &env).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ready"));
    // RINGMASTER_LISTEN beats PORT.
    let listen = format!("127.0.0.1:{}", common::free_port());
    let env = [
        ("PORT", port.as_str()),
        ("RINGMASTER_LISTEN", listen.as_str()),
    ];
    let mut command = ringmaster_env(&["--workers", "1"], &env);
    let other = Server::start_command(&mut command, 1);
    assert!(other
        .wait_log("listening on")
        .contains(&format!("listening on {listen} ")));
}

#[test]
fn a_bad_environment_variable_is_one_line_naming_it() {
    for (env, says) in [
        (
            ("RINGMASTER_WOKERS", "2"),
            "environment variable RINGMASTER_WOKERS names no setting",
        ),
        (
            ("RINGMASTER_WORKERS", "many"),
            "the environment (RINGMASTER_*, PORT): invalid value 'many' for '--workers <N|auto>'",
        ),
        (
            ("RINGMASTER_EXIT_ON_PANIC", "maybe"),
            "RINGMASTER_EXIT_ON_PANIC=\"maybe\": a switch is true or false",
        ),
        (
            ("PORT", "http"),
            "the environment (RINGMASTER_*, PORT): invalid value 'http'",
        ),
    ] {
        let out = ringmaster_env(&[], &[env]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{env:?}: {out:?}");
        let line = one_error_line(&out);
        assert!(line.contains(says), "{env:?}: {line}");
    }
}

#[test]
fn an_app_on_cli_run_has_its_own_name_version_defaults_and_control_socket() {
    let app = common::example("app");
    let out = Command::new(&app).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "myapp 2.3.4\n");
    let port = common::free_port().to_string();
    let help = Command::new(&app)
        .arg("--help")
        .env("MYAPP_PORT", &port)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    assert!(
        help.starts_with("myapp 2.3.4: the example application (answers `myapp`)"),
        "{help}"
    );
    assert!(help.contains("Usage: myapp [OPTIONS]"), "{help}");
    assert!(
        help.contains(&format!("[default: 127.0.0.1:{port}]")),
        "{help}"
    );
    assert!(help.contains("[default: 1]"), "its worker count: {help}");
    assert!(!help.contains("0.0.0.0:3000"), "{help}");
    let out = Command::new(&app).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "myapp: error: unexpected argument '--bogus' found; see `myapp --help`\n"
    );

    // Started as it is, on its own default address; `myapp status` finds it there.
    let mut command = Command::new(&app);
    command.env("MYAPP_PORT", &port);
    let server = Server::start_command(&mut command, 1);
    assert_eq!(server.addr.to_string(), format!("127.0.0.1:{port}"));
    let out = Command::new(&app)
        .arg("status")
        .env("MYAPP_PORT", &port)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ready"));
    assert_eq!(get(&server, "/"), (200, "myapp\n".to_string()));
    // Its log lines and its answers to the operator name it, not ringmaster.
    assert!(server
        .wait_log("listening on")
        .contains(" myapp[master] INFO "));
    let out = Command::new(&app)
        .args(["scale", "0"])
        .env("MYAPP_PORT", &port)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(answer.contains("(`myapp stop`)"), "{answer}");
    let second = Command::new(&app)
        .env("MYAPP_PORT", &port)
        .output()
        .unwrap();
    assert_ne!(second.status.code(), Some(0));
    let line = String::from_utf8_lossy(&second.stderr).to_string();
    assert!(line.contains("another myapp is already running"), "{line}");
    assert!(line.contains("`myapp stop --control "), "{line}");
    // The binary's proxy settings are refused, not ignored, as its mounts are.
    for flags in [
        &["--proxy-timeout", "5"][..],
        &["--proxy-host", "$proxy_host"],
    ] {
        let out = Command::new(&app).args(flags).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {out:?}");
        let line = String::from_utf8_lossy(&out.stderr);
        assert!(line.starts_with("myapp: error: "), "{line}");
        assert!(
            line.contains("the --proxy-* settings are the ringmaster binary's"),
            "{line}"
        );
    }
}
