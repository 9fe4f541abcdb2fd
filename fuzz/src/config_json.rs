//! The `config_json` property: `config.json`, read by
//! `bonopay_server_example::datadir::parse_config` (the one reader
//! `DataDir::open_or_init` uses), then the checks `bonopay serve` applies
//! to it before starting.
//!
//! For any input bytes:
//!
//! 1. `parse_config` never panics: garbage is a message;
//! 2. an accepted configuration's own checks never panic: the certification
//!    modes (`dgi.default_mode`, each outlet's `certification`), the time
//!    zones, the reference rates, the listen address, and the environment
//!    overrides with an empty environment (which change nothing);
//! 3. written back as `bonopay init` writes it (`to_string_pretty`), it
//!    reads back to the same configuration (compared as JSON), so a file
//!    the server rewrites means what the operator wrote.
//!
//! Compiled twice, like every property here (fuzz crate and stable replay).

use bonopay_core::{Currency, ExchangeRate};
use bonopay_server_example::datadir::{CertificationMode, Config, parse_config};

/// What one input did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Refused by `parse_config`.
    Refused,
    /// Read; `checks_pass` tells whether every start-up check named in the
    /// module docs accepts it too.
    Accepted {
        /// The certification modes, time zones and reference rates are
        /// all valid.
        checks_pass: bool,
    },
}

fn as_json(c: &Config) -> serde_json::Value {
    match serde_json::to_value(c) {
        Ok(v) => v,
        Err(e) => panic!("an accepted config does not serialize: {e}"),
    }
}

/// The start-up checks that need no file, database or network: `Ok` when
/// `bonopay serve` would get past them.
///
/// # Errors
/// The first message.
pub fn startup_checks(c: &Config) -> Result<(), String> {
    c.dgi.default_mode()?;
    let zone = |name: &str| {
        name.parse::<chrono_tz::Tz>()
            .map(|_| ())
            .map_err(|_| format!("unknown time zone `{name}`"))
    };
    zone(&c.time_zone)?;
    for m in &c.merchants {
        for o in &m.outlets {
            if let Some(mode) = &o.certification {
                CertificationMode::parse(mode)?;
            }
            if let Some(z) = &o.time_zone {
                zone(z)?;
            }
        }
    }
    for (code, rate) in &c.reference_rates {
        Currency::from_code(code)
            .filter(|c| *c != Currency::Cdf)
            .ok_or_else(|| format!("`{code}` is not a foreign currency"))?;
        ExchangeRate::parse(rate).map_err(|_| format!("`{rate}` is not a rate"))?;
    }
    Ok(())
}

/// Checks the property on `data`, panicking on a violation.
#[allow(clippy::panic)]
#[must_use]
pub fn check(data: &[u8]) -> Outcome {
    let Ok(config) = parse_config(data) else {
        return Outcome::Refused;
    };
    let checks_pass = startup_checks(&config).is_ok();
    let _ = config.listen_addr();

    let before = as_json(&config);
    let mut same = config.clone();
    if let Err(e) = same.apply_env(|_| None) {
        panic!("an empty environment is refused: {e}");
    }
    assert_eq!(as_json(&same), before, "an empty environment changed it");

    let written = match serde_json::to_string_pretty(&config) {
        Ok(t) => t,
        Err(e) => panic!("an accepted config does not write: {e}"),
    };
    match parse_config(written.as_bytes()) {
        Ok(back) => assert_eq!(as_json(&back), before, "written back, it changed"),
        Err(e) => panic!("the config as written back is refused: {e}\n{written}"),
    }
    Outcome::Accepted { checks_pass }
}
