//! The `ringmaster` binary: serves the seed's Hello World app, one worker per core.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
