//! The `bonopay` command-line tool. See `bonopay --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    bonopay_server_example::cli::main()
}
