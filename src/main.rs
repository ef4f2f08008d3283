//! The `ringmaster` binary: serves the seed's Hello World app, one worker per core.

fn main() {
    std::process::exit(ringmaster::cli::run(ringmaster::Server::new(
        ringmaster::HelloWorld,
    )));
}
