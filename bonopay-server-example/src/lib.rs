#![doc = "The Bono Pay reference server and the `bonopay` command-line tool.\n\n\
The binary (`src/main.rs`) only parses its arguments with [`cli::Cli`] and\n\
hands them to [`cli::run`]; every command lives in its own module under\n\
[`cli`] and works on strings, so it can be tested without a process."]
#![forbid(unsafe_code)]

pub mod cli;
pub mod datadir;
pub mod server;
