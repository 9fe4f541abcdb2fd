//! The e-MCF over HTTP(S) (feature `http`): reqwest with rustls, blocking
//! (the agent has its own thread).
//!
//! Every failure is classified by whether the call may have taken effect:
//! a refused connection did not; a timeout, a dropped connection, a 5xx
//! or an unreadable 2xx body may have (the agent then reconciles).

use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use serde::de::DeserializeOwned;

use crate::dgi::{
    DgiConfirmation, DgiErrorBody, DgiInvoiceDetails, DgiInvoiceRequest, DgiStatus, DgiSubmitted,
    DgiTotals, DgiTransport, TransportError,
};

/// The e-MCF at a base URL with a bearer token.
pub struct HttpDgiTransport {
    base: String,
    token: String,
    client: Client,
}

impl std::fmt::Debug for HttpDgiTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("HttpDgiTransport")
            .field("base", &self.base)
            .finish_non_exhaustive()
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
        let client = Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| TransportError::Unreachable(e.to_string()))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.trim().to_owned(),
            client,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/invoice{path}", self.base)
    }

    fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, TransportError> {
        let resp = req.bearer_auth(&self.token).send().map_err(|e| {
            if e.is_connect() && !e.is_timeout() {
                TransportError::Unreachable(e.to_string())
            } else {
                TransportError::Unknown(e.to_string())
            }
        })?;
        Self::read(resp)
    }

    fn read<T: DeserializeOwned>(resp: Response) -> Result<T, TransportError> {
        let status = resp.status();
        let body = resp
            .bytes()
            .map_err(|e| TransportError::Unknown(format!("reading the answer: {e}")))?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| TransportError::Unknown(format!("unreadable answer: {e}")));
        }
        let code = status.as_u16();
        if code == 401 || code == 403 {
            return Err(TransportError::Unauthorized(format!("HTTP {code}")));
        }
        let parsed = serde_json::from_slice::<DgiErrorBody>(&body).ok();
        if status.is_server_error() {
            return Err(TransportError::Unknown(match parsed {
                Some(b) => format!("HTTP {code}: error {}: {}", b.error_code, b.error_desc),
                None => format!("HTTP {code}"),
            }));
        }
        Err(match parsed {
            Some(b) => TransportError::Rejected {
                status: code,
                code: b.error_code,
                desc: b.error_desc,
            },
            None => TransportError::Rejected {
                status: code,
                code: code.to_string(),
                desc: String::from_utf8_lossy(&body).chars().take(200).collect(),
            },
        })
    }
}

/// A unit answer (CANCEL has no useful body).
#[derive(serde::Deserialize)]
struct Ignored {}

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
        let resp = self
            .client
            .put(self.url(&format!("/{uid}/CANCEL")))
            .bearer_auth(&self.token)
            .send()
            .map_err(|e| {
                if e.is_connect() && !e.is_timeout() {
                    TransportError::Unreachable(e.to_string())
                } else {
                    TransportError::Unknown(e.to_string())
                }
            })?;
        if resp.status().is_success() {
            return Ok(());
        }
        Self::read::<Ignored>(resp).map(|_| ())
    }

    fn details(&self, uid: &str) -> Result<DgiInvoiceDetails, TransportError> {
        self.send(self.client.get(self.url(&format!("/{uid}"))))
    }
}
