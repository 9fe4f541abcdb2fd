//! The channels a receipt leaves by: e-mail over SMTP, and a WhatsApp-style HTTP messaging API.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Why a channel could not deliver.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The channel could not be reached (connection refused, timeout).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The channel answered with a refusal (SMTP error reply, non-2xx).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The message could not be built (bad address).
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// A receipt to send.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// Recipient (address or phone number).
    pub to: String,
    /// Subject (e-mail) — ASCII.
    pub subject: String,
    /// Message text.
    pub text: String,
    /// File name of the attached document.
    pub filename: String,
    /// The document (the PDF receipt).
    pub document: Vec<u8>,
}

/// A boxed future, so that [`MessagingChannel`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A messaging channel (WhatsApp, SMS gateway, …). Async, since it sits at
/// the network edge; object-safe, used as `Arc<dyn MessagingChannel>`.
pub trait MessagingChannel: fmt::Debug + Send + Sync {
    /// Sends `message`; `Ok` once the channel accepted it.
    fn send<'a>(&'a self, message: &'a OutgoingMessage)
    -> BoxFuture<'a, Result<(), DeliveryError>>;
}

/// A WhatsApp-style HTTP API: `POST {url}` with `Authorization: Bearer
/// {token}` and the JSON body
/// `{"to", "text", "document_base64", "filename", "mime_type"}`; any 2xx
/// answer means accepted.
///
/// The URL is the operator's (`deliveries.whatsapp_url`); a tenant only
/// chooses the phone number. It still obeys the egress policy, as webhooks
/// do ([`super::egress`]): a URL on a loopback, private… address needs
/// the operator's allow-list, the host is resolved through the policy at
/// every connection, and no redirect is followed, so neither the API's DNS
/// nor its answers can send the receipt (and the bearer token) elsewhere.
#[derive(Debug, Clone)]
pub struct WhatsAppHttpChannel {
    url: String,
    token: String,
    client: reqwest::Client,
}

impl WhatsAppHttpChannel {
    /// A channel posting to `url` with `token`, 10 s timeout, to the
    /// destinations `egress` allows.
    ///
    /// # Errors
    /// A message if `url` is a destination `egress` refuses (so that
    /// `bonopay serve` says so at start) or the HTTP client cannot be
    /// built.
    pub fn new(url: &str, token: &str, egress: &Egress) -> Result<Self, String> {
        egress.check_url(url).map_err(|e| {
            format!(
                "the WhatsApp URL {url}: {e}; allow it in config.json `egress.allow` \
                 (or BONOPAY_EGRESS_ALLOW) if it is on your network"
            )
        })?;
        let client = egress
            .client_builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            url: url.to_owned(),
            token: token.to_owned(),
            client,
        })
    }
}

#[derive(Serialize)]
pub(super) struct WhatsAppBody<'a> {
    to: &'a str,
    text: &'a str,
    document_base64: String,
    filename: &'a str,
    mime_type: &'static str,
}

impl MessagingChannel for WhatsAppHttpChannel {
    fn send<'a>(&'a self, m: &'a OutgoingMessage) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let body = WhatsAppBody {
                to: &m.to,
                text: &m.text,
                document_base64: STANDARD.encode(&m.document),
                filename: &m.filename,
                mime_type: "application/pdf",
            };
            let resp = self
                .client
                .post(&self.url)
                .bearer_auth(&self.token)
                .json(&body)
                .send()
                .await
                .map_err(|e| {
                    DeliveryError::Unreachable(if EgressError::is_refusal(&e) {
                        NOT_ALLOWED.to_owned()
                    } else {
                        e.to_string()
                    })
                })?;
            let status = resp.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(DeliveryError::Rejected(format!(
                    "the messaging API answered {status}"
                )))
            }
        })
    }
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SmtpSecurity {
    /// Plain text: only for a relay on this host or a private network.
    Plain,
    /// STARTTLS, required: the mail is not sent if the server lacks it.
    StartTls,
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

/// Sends e-mail over SMTP: plain to a local relay, or over TLS (see the
/// [module docs](self)).
#[derive(Clone)]
pub struct SmtpMailer {
    transport: SmtpTransport,
    /// The URL as given (with its password, if any: never printed).
    url: String,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) security: SmtpSecurity,
    from: Mailbox,
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the URL nor the transport: they hold the password.
        f.debug_struct("SmtpMailer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

pub(super) const SMTP_URL_FORMS: &str = "smtp://host[:port] (plain, to a local relay), \
smtp://[user:password@]host[:port]?tls=required (STARTTLS) or \
smtps://[user:password@]host[:port] (TLS)";

/// How a PEM certificate starts.
pub(super) const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----";

/// How long one SMTP exchange may take.
pub(super) const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

impl SmtpMailer {
    /// A mailer for `url` sending as `from` (`name <addr>` or `addr`).
    /// `smtp://host[:port]` (port 25) is plain text;
    /// `smtp://host[:port]?tls=required` (port 587) requires STARTTLS;
    /// `smtps://host[:port]` (port 465) is TLS throughout. `user:password@`
    /// before the host logs in (percent-encode reserved characters); it is
    /// refused on a plain connection.
    ///
    /// # Errors
    /// A message (never holding the password) if the URL has another form
    /// or `from` is not an address.
    pub fn from_url(url: &str, from: &str) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("SMTP URL: {e}"))?;
        let tls = parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let security = match (parsed.scheme(), tls.as_deref()) {
            ("smtp", None) => SmtpSecurity::Plain,
            ("smtp", Some("required")) => SmtpSecurity::StartTls,
            ("smtps", None) => SmtpSecurity::Implicit,
            _ => return Err(format!("SMTP URL: use {SMTP_URL_FORMS}")),
        };
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| "SMTP URL: no host".to_owned())?
            .to_owned();
        if security == SmtpSecurity::Plain && parsed.password().is_some() {
            return Err(
                "SMTP URL: a password is only sent over TLS (add ?tls=required, or use smtps://)"
                    .into(),
            );
        }
        let from = from
            .parse::<Mailbox>()
            .map_err(|e| format!("SMTP from `{from}`: {e}"))?;
        let port = parsed.port().unwrap_or(match security {
            SmtpSecurity::Plain => 25,
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::Implicit => 465,
        });
        let transport = SmtpTransport::from_url(url)
            .map_err(|e| format!("SMTP URL: {e}"))?
            .port(port)
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        Ok(Self {
            transport,
            url: url.to_owned(),
            host,
            port,
            security,
            from,
        })
    }

    /// The same mailer trusting the CA certificates in `pem` besides the
    /// Mozilla roots: for a relay with a private CA.
    ///
    /// # Errors
    /// A message if the mailer sends in plain text or `pem` holds no
    /// certificate.
    pub fn with_root_certificate(mut self, pem: &[u8]) -> Result<Self, String> {
        let tls = |params| match self.security {
            SmtpSecurity::Plain => None,
            SmtpSecurity::StartTls => Some(Tls::Required(params)),
            SmtpSecurity::Implicit => Some(Tls::Wrapper(params)),
        };
        // lettre takes a PEM without any certificate in it as an empty
        // list; say so now rather than fail every handshake later.
        if !pem
            .windows(CERT_PEM.len())
            .any(|w| w == CERT_PEM.as_bytes())
        {
            return Err("SMTP CA certificate: no PEM certificate in it".into());
        }
        let cert = Certificate::from_pem(pem).map_err(|e| format!("SMTP CA certificate: {e}"))?;
        let params = TlsParameters::builder(self.host.clone())
            .add_root_certificate(cert)
            .build_rustls()
            .map_err(|e| format!("SMTP TLS: {e}"))?;
        let tls = tls(params)
            .ok_or_else(|| "SMTP CA certificate: the SMTP URL sends in plain text".to_owned())?;
        self.transport = SmtpTransport::from_url(&self.url)
            .map_err(|e| format!("SMTP URL: {e}"))?
            .port(self.port)
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        Ok(self)
    }

    /// Sends `m`, the document attached as `application/pdf`. Blocking.
    ///
    /// # Errors
    /// [`DeliveryError`].
    pub fn send(&self, m: &OutgoingMessage) -> Result<(), DeliveryError> {
        let to =
            m.to.parse::<Mailbox>()
                .map_err(|e| DeliveryError::Invalid(e.to_string()))?;
        let pdf = ContentType::parse("application/pdf")
            .map_err(|e| DeliveryError::Invalid(e.to_string()))?;
        let email = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(m.subject.clone())
            .multipart(
                MultiPart::mixed()
                    .singlepart(SinglePart::plain(m.text.clone()))
                    .singlepart(Attachment::new(m.filename.clone()).body(m.document.clone(), pdf)),
            )
            .map_err(|e| DeliveryError::Invalid(e.to_string()))?;
        self.transport.send(&email).map(|_| ()).map_err(|e| {
            if e.is_permanent() || e.is_transient() {
                DeliveryError::Rejected(e.to_string())
            } else {
                DeliveryError::Unreachable(e.to_string())
            }
        })
    }
}
