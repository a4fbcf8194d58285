//! `immich-throttle`: keeps the Pi below firmware throttling while Immich
//! works through its backlog. Everything it does is in the library
//! (`appliance::throttle::cli`).

fn main() -> std::process::ExitCode {
    appliance::throttle::cli::main()
}
