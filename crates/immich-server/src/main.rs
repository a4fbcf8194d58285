//! `immich-server`: the command users type after every reboot. Everything
//! it does is in the library (`appliance::cli`), shared with the tests.

fn main() -> std::process::ExitCode {
    appliance::cli::main()
}
