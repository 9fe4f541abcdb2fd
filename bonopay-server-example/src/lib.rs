#![doc = "The Bono Pay reference server and the `bonopay` command-line tool.\n\n\
The binary (`src/main.rs`) only parses its arguments with [`cli::Cli`] and\n\
hands them to [`cli::run`]; every command lives in its own module under\n\
[`cli`] and works on strings, so it can be tested without a process.\n\n\
[`server`] is the reference HTTP server (`bonopay serve`): [`server::router`]\n\
builds the whole axum `Router` from an [`server::AppState`] (a `Fiscalizer`\n\
and an [`server::auth::ApiKeyStore`]), so an application can embed it and\n\
tests can drive it in process. [`datadir`] is the on-disk layout and the\n\
configuration (`config.json` and environment variables)."]
#![forbid(unsafe_code)]

pub mod cli;
pub mod datadir;
pub mod server;
