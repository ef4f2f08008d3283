//! The `ringmaster` binary: serves the seed's Hello World app, one worker per core, and the
//! files of each `--static PREFIX=DIR`.

fn main() {
    std::process::exit(ringmaster::cli::run_builtin());
}
