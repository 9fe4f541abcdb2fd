//! The e-MCF over HTTP(S) (feature `http`): reqwest with rustls, blocking
//! (the agent has its own thread).
//!
//! Every failure is classified by whether the call may have taken effect:
//! a refused connection did not; a timeout, a dropped connection, a 5xx
//! or an unreadable 2xx body may have (the agent then reconciles).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::dgi::{
    DgiConfirmation, DgiInvoiceRequest, DgiPendingEcho, DgiStatus, DgiSubmitted, DgiTotals,
    DgiTransport, TransportError, decode_reply, pending_echo, read_reply,
};

/// Where the bearer token of one e-MCF account comes from. Read before
/// every call, so a renewed token (a new file, a new variable in a
/// restarted supervisor) is used without restarting the server.
pub trait TokenSource: std::fmt::Debug + Send + Sync {
    /// The current token.
    ///
    /// # Errors
    /// A message saying why there is none (never the token itself).
    fn token(&self) -> Result<String, String>;
}

/// A fixed token (tests, or a caller that manages renewal itself).
pub struct StaticToken(pub String);

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticToken(<redacted>)")
    }
}

impl TokenSource for StaticToken {
    fn token(&self) -> Result<String, String> {
        Ok(self.0.trim().to_owned())
    }
}

/// A token kept in a file (the first line), read at each call: replacing
/// the file renews the token.
#[derive(Debug, Clone)]
pub struct FileToken(pub PathBuf);

impl TokenSource for FileToken {
    fn token(&self) -> Result<String, String> {
        let text = std::fs::read_to_string(&self.0)
            .map_err(|e| format!("cannot read the token file {}: {e}", self.0.display()))?;
        let t = text.lines().next().unwrap_or_default().trim().to_owned();
        if t.is_empty() {
            return Err(format!("the token file {} is empty", self.0.display()));
        }
        Ok(t)
    }
}

/// A token in an environment variable.
#[derive(Debug, Clone)]
pub struct EnvToken(pub String);

impl TokenSource for EnvToken {
    fn token(&self) -> Result<String, String> {
        match std::env::var(&self.0) {
            Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_owned()),
            _ => Err(format!("the environment variable {} is not set", self.0)),
        }
    }
}

/// The e-MCF at a base URL, for one taxpayer account.
pub struct HttpDgiTransport {
    base: String,
    token: Arc<dyn TokenSource>,
    client: Client,
}

impl std::fmt::Debug for HttpDgiTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("HttpDgiTransport")
            .field("base", &self.base)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

fn sent(e: &reqwest::Error) -> TransportError {
    if e.is_connect() && !e.is_timeout() {
        TransportError::Unreachable(e.to_string())
    } else {
        TransportError::Unknown(e.to_string())
    }
}

impl HttpDgiTransport {
    /// `base` is the URL the `/api/...` paths hang off: for the DGI test
    /// platform `https://developper.dgirdc.cd/edef`, for the simulator
    /// `http://127.0.0.1:7070`. The token is the e-MCF's JWT.
    ///
    /// # Errors
    /// [`TransportError::Unreachable`] if the HTTP client cannot be built.
    pub fn new(base: &str, token: &str, timeout: Duration) -> Result<Self, TransportError> {
        Self::with_token_source(base, Arc::new(StaticToken(token.to_owned())), timeout)
    }

    /// As [`Self::new`], the token read from `token` before every call.
    ///
    /// # Errors
    /// [`TransportError::Unreachable`] if the HTTP client cannot be built.
    pub fn with_token_source(
        base: &str,
        token: Arc<dyn TokenSource>,
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        let client = Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            // A redirect would send the bearer token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| TransportError::Unreachable(e.to_string()))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            client,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/invoice{path}", self.base)
    }

    fn bearer(&self) -> Result<String, TransportError> {
        self.token.token().map_err(TransportError::Unauthorized)
    }

    fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, TransportError> {
        let (status, body) = self.call(req)?;
        decode_reply(status, &body)
    }

    fn send_value(&self, req: RequestBuilder) -> Result<Value, TransportError> {
        let (status, body) = self.call(req)?;
        read_reply(status, &body).map(|(v, _)| v)
    }

    /// Sends with the bearer token; the reply's status and body, read by
    /// the pure [`read_reply`] / [`decode_reply`] (fuzzed as `dgi_reply`).
    fn call(&self, req: RequestBuilder) -> Result<(u16, Vec<u8>), TransportError> {
        let resp: Response = req
            .bearer_auth(self.bearer()?)
            .send()
            .map_err(|e| sent(&e))?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .map_err(|e| TransportError::Unknown(format!("reading the answer: {e}")))?;
        Ok((status, body.to_vec()))
    }
}

impl DgiTransport for HttpDgiTransport {
    fn status(&self) -> Result<DgiStatus, TransportError> {
        self.send(self.client.get(self.url("")))
    }

    fn submit(&self, invoice: &DgiInvoiceRequest) -> Result<DgiSubmitted, TransportError> {
        self.send(self.client.post(self.url("")).json(invoice))
    }

    fn confirm(&self, uid: &str, totals: &DgiTotals) -> Result<DgiConfirmation, TransportError> {
        self.send(
            self.client
                .put(self.url(&format!("/{uid}/CONFIRM")))
                .json(totals),
        )
    }

    fn cancel(&self, uid: &str) -> Result<(), TransportError> {
        self.send_value(self.client.put(self.url(&format!("/{uid}/CANCEL"))))
            .map(|_| ())
    }

    fn details(&self, uid: &str) -> Result<DgiPendingEcho, TransportError> {
        pending_echo(self.send_value(self.client.get(self.url(&format!("/{uid}"))))?)
    }

    fn info(&self, table: &str) -> Result<Value, TransportError> {
        self.send_value(self.client.get(format!("{}/api/info/{table}", self.base)))
    }
}
