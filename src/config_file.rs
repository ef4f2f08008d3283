//! `--config PATH`: a TOML file holding the same settings as the flags, one key per flag,
//! named as the flag without its dashes (`workers = 4`, `listen = "127.0.0.1:8080"`,
//! `exit-on-panic = true`, `static = ["/=./public"]`). Flags given on the command line
//! override the file's keys (a list flag such as `--static` replaces the file's list).
//!
//! The file is turned into the flags it stands for and parsed by the one command-line
//! parser, so every setting, its check and its error are the flags' own, and a new flag is a
//! new key with no code here. An unknown key, a table, or a value of the wrong shape is an
//! error naming the file and the key.
//!
//! The file is read once at start, and again at each reload: the reload's new workers run
//! with what the file says then (handed its text in [`CONFIG_ENV`], so that a worker of that
//! generation respawned later runs the same settings even if the file changed since).
//! Settings of the master itself (listening, workers, metrics, the control socket,
//! timeouts the master keeps) take a restart, as for a new binary.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The largest configuration file read.
pub(crate) const CONFIG_BYTES_MAX: u64 = 64 * 1024;

/// The environment variable that hands a worker started from a binary its generation's
/// configuration text.
pub(crate) const CONFIG_ENV: &str = "RINGMASTER_WORKER_CONFIG";

/// The environment variable that names the configuration file where `--config` is not
/// given, as every other flag's variable stands for it.
pub(crate) const CONFIG_PATH_ENV: &str = "RINGMASTER_CONFIG";

/// How a flag takes its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A switch (`--exit-on-panic`): `true` or `false` in the file.
    Switch,
    /// One value: a string or a number in the file.
    One,
    /// Repeatable (`--static`): a list in the file (or one value).
    Many,
}

/// A flag the file may set: its long name and how it takes its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Flag {
    pub(crate) name: String,
    pub(crate) kind: Kind,
}

/// The path and text the master started with.
static STARTED_WITH: OnceLock<(PathBuf, String)> = OnceLock::new();

/// Records the file the master started with, for [`started_with`].
pub(crate) fn remember(path: &Path, text: &str) {
    let _ = STARTED_WITH.set((path.to_path_buf(), text.to_string()));
}

/// The configuration file this process started with, and its text then.
pub(crate) fn started_with() -> Option<&'static (PathBuf, String)> {
    STARTED_WITH.get()
}

/// The keys of the master's own settings, which it reads once at start: a reload hands the
/// file to the new workers, but these take a restart (`workers` also `scale`).
const RESTART_KEYS: [&str; 19] = [
    "listen",
    "workers",
    "cpu-affinity",
    "listen-mode",
    "backlog",
    "control",
    "metrics",
    "access-log",
    "log-format",
    "drain-timeout",
    "reload-parallel",
    "ready-timeout",
    "respawn-failures-max",
    "respawn-window",
    "min-uptime",
    "max-requests",
    "max-requests-jitter",
    "max-memory",
    "worker-timeout",
];

/// The keys of the master's own settings whose values differ between the file the server
/// started with (`started`) and the file now (`now`): what a reload does not apply.
pub(crate) fn needs_restart(started: &str, now: &str) -> Vec<&'static str> {
    let (Ok(a), Ok(b)) = (started.parse::<toml::Table>(), now.parse::<toml::Table>()) else {
        return Vec::new();
    };
    RESTART_KEYS
        .into_iter()
        .filter(|key| a.get(*key) != b.get(*key))
        .collect()
}

/// The configuration text for `path`: the one handed in [`CONFIG_ENV`] to a worker started
/// from a binary, else the file's, read whole (at most [`CONFIG_BYTES_MAX`]).
pub(crate) fn text_for(path: &Path) -> Result<String, String> {
    let handed = std::env::var_os(crate::master::exec::WORKER_ENV).is_some();
    if let (true, Some(text)) = (handed, std::env::var_os(CONFIG_ENV)) {
        std::env::remove_var(CONFIG_ENV);
        return text
            .into_string()
            .map_err(|_| format!("{CONFIG_ENV} is not UTF-8"));
    }
    read(path)
}

/// Reads the file whole, at most [`CONFIG_BYTES_MAX`] bytes; the error names the file.
pub(crate) fn read(path: &Path) -> Result<String, String> {
    let p = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("config file {p}: {e}"))?;
    let mut text = String::new();
    file.take(CONFIG_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("config file {p}: {e}"))?;
    if text.len() as u64 > CONFIG_BYTES_MAX {
        return Err(format!(
            "config file {p}: over {CONFIG_BYTES_MAX} bytes; a configuration is a few lines"
        ));
    }
    Ok(text)
}

/// Whether `given` (arguments) holds the flag `name`.
fn holds(given: &[OsString], name: &str) -> bool {
    let long = format!("--{name}");
    given.iter().any(|a| {
        a.to_str()
            .is_some_and(|a| a == long || a.starts_with(&format!("{long}=")))
    })
}

/// The flags the TOML `text` (of the file `path`) stands for, leaving out those the layers
/// above give (`given`: their arguments), which override them, and those `takes` does not
/// want. `flags` are those the file may set.
pub(crate) fn to_args(
    text: &str,
    path: &Path,
    flags: &[Flag],
    given: &[OsString],
    takes: impl Fn(&str) -> bool,
) -> Result<Vec<OsString>, String> {
    let p = path.display();
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("config file {p}: {}", one_line(&e.to_string())))?;
    let mut args = Vec::new();
    for (key, value) in &table {
        let Some(flag) = flags.iter().find(|f| f.name == *key) else {
            return Err(format!(
                "config file {p}: unknown key `{key}`; its keys are the long flags without \
                 `--` (see --help)"
            ));
        };
        if holds(given, key) || !takes(key) {
            continue;
        }
        let long = format!("--{key}");
        let shape = |what: &str| format!("config file {p}: `{key}` {what}");
        match (flag.kind, value) {
            (Kind::Switch, toml::Value::Boolean(true)) => args.push(long.into()),
            (Kind::Switch, toml::Value::Boolean(false)) => {}
            (Kind::Switch, _) => return Err(shape("is a switch: give true or false")),
            (Kind::Many, toml::Value::Array(items)) => {
                for item in items {
                    let item = scalar(item).ok_or_else(|| shape("lists a table or a list"))?;
                    args.push(with_value(&long, item));
                }
            }
            (_, toml::Value::Array(_)) => return Err(shape("takes one value, not a list")),
            (_, value) => {
                let value = scalar(value).ok_or_else(|| shape("is a table"))?;
                args.push(with_value(&long, value));
            }
        }
    }
    Ok(args)
}

/// The prefix of the environment variables that set flags: `RINGMASTER_WORKERS=4` is
/// `--workers 4`.
pub(crate) const ENV_PREFIX: &str = "RINGMASTER_";

/// Variables with [`ENV_PREFIX`] that are ringmaster's own, not settings.
/// Variables of the `RINGMASTER_` prefix that are not flags to layer: the two a master hands
/// a worker, and the file's path, which is read before the layers are.
const ENV_RESERVED: [&str; 3] = [crate::master::exec::WORKER_ENV, CONFIG_ENV, CONFIG_PATH_ENV];

/// The flags the environment stands for: `RINGMASTER_<FLAG>` for each flag (its name in
/// capitals, `-` as `_`), and `PORT` (as platforms set it) for `--listen PORT` unless
/// `RINGMASTER_LISTEN` is set, leaving out those the command line gives (`given`) and those
/// `takes` does not want. A switch is `true`/`1`/`yes` or `false`/`0`/`no`/empty; a
/// repeatable flag's values are separated by `;`. A `RINGMASTER_` variable that names no
/// flag is an error naming it.
pub(crate) fn env_args(
    flags: &[Flag],
    given: &[OsString],
    takes: impl Fn(&str) -> bool,
) -> Result<Vec<OsString>, String> {
    env_args_from(std::env::vars_os(), flags, given, takes)
}

fn env_args_from(
    vars: impl Iterator<Item = (OsString, OsString)>,
    flags: &[Flag],
    given: &[OsString],
    takes: impl Fn(&str) -> bool,
) -> Result<Vec<OsString>, String> {
    let mut args = Vec::new();
    let mut port = None;
    let mut listen_set = false;
    let mut vars: Vec<(OsString, OsString)> = vars.collect();
    vars.sort();
    for (key, value) in vars {
        let Some(key) = key.to_str() else { continue };
        if key == "PORT" {
            port = Some(value);
            continue;
        }
        let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if ENV_RESERVED.contains(&key) {
            continue;
        }
        let name = rest.to_ascii_lowercase().replace('_', "-");
        let Some(flag) = flags.iter().find(|f| f.name == name) else {
            return Err(format!(
                "environment variable {key} names no setting; a setting's variable is \
                 {ENV_PREFIX} followed by its long flag in capitals, `-` as `_` (see \
                 --help); rename it or unset it"
            ));
        };
        listen_set |= name == "listen";
        if holds(given, &name) || !takes(&name) {
            continue;
        }
        let long = format!("--{name}");
        let text = value
            .into_string()
            .map_err(|_| format!("environment variable {key} is not UTF-8"))?;
        match flag.kind {
            Kind::Switch => match text.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => args.push(long.into()),
                "false" | "0" | "no" | "" => {}
                _ => {
                    return Err(format!(
                        "environment variable {key}={text:?}: a switch is true or false"
                    ))
                }
            },
            Kind::Many => {
                for item in text.split(';').filter(|i| !i.is_empty()) {
                    args.push(with_value(&long, item.into()));
                }
            }
            Kind::One => args.push(with_value(&long, text.into())),
        }
    }
    if let Some(port) = port.filter(|_| !listen_set && !holds(given, "listen") && takes("listen")) {
        args.push(with_value("--listen", port));
    }
    Ok(args)
}

/// `--name=value` as one argument: a value that starts with `-` (a file named `-x.log`)
/// is then the flag's value, not taken for a flag of its own.
fn with_value(long: &str, value: OsString) -> OsString {
    let mut arg = OsString::from(format!("{long}="));
    arg.push(value);
    arg
}

/// A string, number or boolean as the flag's text.
fn scalar(value: &toml::Value) -> Option<OsString> {
    match value {
        toml::Value::String(s) => Some(s.into()),
        toml::Value::Integer(n) => Some(n.to_string().into()),
        toml::Value::Float(x) => Some(x.to_string().into()),
        toml::Value::Boolean(b) => Some(b.to_string().into()),
        _ => None,
    }
}

/// The parser's error, on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> Vec<Flag> {
        [
            ("workers", Kind::One),
            ("listen", Kind::One),
            ("exit-on-panic", Kind::Switch),
            ("static", Kind::Many),
            ("drain-timeout", Kind::One),
        ]
        .into_iter()
        .map(|(name, kind)| Flag {
            name: name.to_string(),
            kind,
        })
        .collect()
    }

    fn args(text: &str, given: &[&str]) -> Result<Vec<String>, String> {
        let given: Vec<OsString> = given.iter().map(OsString::from).collect();
        to_args(text, Path::new("/etc/app.toml"), &flags(), &given, |_| true)
            .map(|a| a.into_iter().map(|s| s.into_string().unwrap()).collect())
    }

    #[test]
    fn keys_become_the_flags_they_name_unless_the_command_line_gives_them() {
        let text = r#"
            workers = 4
            listen = "127.0.0.1:8080"
            exit-on-panic = true
            static = ["/=./public", "/img=/srv/img"]
            drain-timeout = 2.5
        "#;
        let mut got = args(text, &[]).unwrap();
        got.sort();
        let mut want = [
            "--workers=4",
            "--listen=127.0.0.1:8080",
            "--exit-on-panic",
            "--static=/=./public",
            "--static=/img=/srv/img",
            "--drain-timeout=2.5",
        ];
        want.sort();
        assert_eq!(got, want);
        // Flags on the command line win, whole lists included.
        let got = args(
            text,
            &["--workers", "2", "--static=/=/x", "--exit-on-panic"],
        )
        .unwrap();
        assert_eq!(
            got,
            ["--drain-timeout=2.5", "--listen=127.0.0.1:8080"],
            "toml tables iterate in key order"
        );
        assert_eq!(
            args("exit-on-panic = false", &[]).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn an_unknown_key_or_a_wrong_shape_is_an_error_naming_the_file_and_the_key() {
        for (text, says) in [
            (
                "wokers = 4",
                "config file /etc/app.toml: unknown key `wokers`",
            ),
            ("exit-on-panic = 1", "`exit-on-panic` is a switch"),
            ("workers = [1, 2]", "`workers` takes one value, not a list"),
            ("[listen]\nport = 3", "`listen` is a table"),
            ("static = [[1]]", "`static` lists a table or a list"),
            ("workers = ", "config file /etc/app.toml: "),
        ] {
            let err = args(text, &[]).unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn the_environment_names_flags_in_capitals_and_port_is_listen_unless_it_is_set() {
        let env = |vars: &[(&str, &str)], given: &[&str]| {
            let vars = vars
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v)));
            let given: Vec<OsString> = given.iter().map(OsString::from).collect();
            env_args_from(
                vars.collect::<Vec<_>>().into_iter(),
                &flags(),
                &given,
                |_| true,
            )
            .map(|a| {
                a.into_iter()
                    .map(|s| s.into_string().unwrap())
                    .collect::<Vec<_>>()
            })
        };
        let got = env(
            &[
                ("RINGMASTER_WORKERS", "4"),
                ("RINGMASTER_EXIT_ON_PANIC", "yes"),
                ("RINGMASTER_STATIC", "/=./public;/img=/srv/img"),
                ("RINGMASTER_WORKER", "internal"),
                ("PORT", "8080"),
                ("HOME", "/root"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            got,
            [
                "--exit-on-panic",
                "--static=/=./public",
                "--static=/img=/srv/img",
                "--workers=4",
                "--listen=8080"
            ]
        );
        // RINGMASTER_LISTEN, or --listen given, beats PORT; a flag given beats its variable.
        let got = env(
            &[("PORT", "8080"), ("RINGMASTER_LISTEN", "127.0.0.1:1")],
            &[],
        );
        assert_eq!(got.unwrap(), ["--listen=127.0.0.1:1"]);
        let got = env(
            &[("PORT", "8080"), ("RINGMASTER_WORKERS", "4")],
            &["--listen=1", "--workers", "2"],
        );
        assert_eq!(got.unwrap(), Vec::<String>::new());
        // A value that starts with `-` stays the flag's value.
        let got = env(&[("RINGMASTER_STATIC", "-odd=/srv")], &[]);
        assert_eq!(got.unwrap(), ["--static=-odd=/srv"]);
        let got = env(&[("RINGMASTER_EXIT_ON_PANIC", "0")], &[]);
        assert_eq!(got.unwrap(), Vec::<String>::new());
        let err = env(&[("RINGMASTER_WOKERS", "4")], &[]).unwrap_err();
        assert!(err.contains("RINGMASTER_WOKERS names no setting"), "{err}");
        let err = env(&[("RINGMASTER_EXIT_ON_PANIC", "sure")], &[]).unwrap_err();
        assert!(err.contains("a switch is true or false"), "{err}");
    }

    #[test]
    fn a_reload_names_the_masters_settings_the_file_changed() {
        let started = "workers = 2\nlisten = \"127.0.0.1:80\"\nidle-timeout = 5\n";
        assert!(needs_restart(started, started).is_empty());
        // A worker's setting is applied by the reload; the master's are not.
        let now = "workers = 4\nlisten = \"127.0.0.1:80\"\nidle-timeout = 9\nmetrics = \"x\"\n";
        assert_eq!(needs_restart(started, now), ["workers", "metrics"]);
    }

    #[test]
    fn a_file_past_the_bound_is_refused() {
        let dir = std::env::temp_dir().join(format!("rm-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.toml");
        std::fs::write(&big, "#".repeat(CONFIG_BYTES_MAX as usize + 1)).unwrap();
        assert!(read(&big).unwrap_err().contains("over 65536 bytes"));
        let edge = dir.join("edge.toml");
        std::fs::write(&edge, "#".repeat(CONFIG_BYTES_MAX as usize)).unwrap();
        assert!(read(&edge).is_ok());
        assert!(read(&dir.join("missing.toml"))
            .unwrap_err()
            .contains("missing.toml: No such file"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
