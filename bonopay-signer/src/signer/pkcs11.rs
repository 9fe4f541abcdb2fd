//! PKCS#11 signer (cryptoki), for HSMs and tokens; tested against SoftHSM2.
//!
//! The key never leaves the token: it is generated inside it as sensitive
//! and non-extractable, and signing is `CKM_ECDSA` over our 32-byte digest.
//! Several sessions form a pool so threads sign in parallel.
//!
//! The PIN comes from an environment variable or a file
//! ([`PinSource`]); never put it on a command line, where `ps` shows it.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::error::SignerError;
use crate::signer::{PublicKey, Signature};
use crate::signer::{SignOutput, Signer};

/// DER of the P-256 curve OID (1.2.840.10045.3.1.7), the `CKA_EC_PARAMS` value.
pub const P256_EC_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Where the user PIN comes from.
#[derive(Clone)]
#[non_exhaustive]
pub enum PinSource {
    /// An environment variable, e.g. `BONOPAY_PKCS11_PIN`.
    Env(String),
    /// A file (first line), readable by the service user only.
    File(PathBuf),
    /// A value the embedding application already holds.
    Value(Zeroizing<String>),
}

impl fmt::Debug for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::Env(v) => write!(f, "Env({v})"),
            PinSource::File(p) => write!(f, "File({})", p.display()),
            PinSource::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

impl PinSource {
    fn read(&self) -> Result<Zeroizing<String>, SignerError> {
        match self {
            PinSource::Env(var) => std::env::var(var).map(Zeroizing::new).map_err(|_| {
                SignerError::PinUnavailable(format!("environment variable {var} is not set"))
            }),
            PinSource::File(path) => std::fs::read_to_string(path)
                .map(|s| Zeroizing::new(s.lines().next().unwrap_or("").to_owned()))
                .map_err(|e| {
                    SignerError::PinUnavailable(format!("cannot read {}: {e}", path.display()))
                }),
            PinSource::Value(v) => Ok(v.clone()),
        }
    }
}

/// How to reach the key.
#[derive(Debug, Clone)]
pub struct Pkcs11Config {
    /// The module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// Token label.
    pub token_label: String,
    /// `CKA_LABEL` of the key pair.
    pub key_label: String,
    /// The user PIN.
    pub pin: PinSource,
    /// Sessions in the pool (at least 1).
    pub sessions: usize,
}

/// One context per module per process. PKCS#11 `C_Initialize`/`C_Finalize`
/// are process-wide: two independent contexts on one library would
/// finalize each other, so they are shared and kept for the process's life.
fn context(module: &Path) -> Result<Pkcs11, SignerError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let map = CONTEXTS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map
        .lock()
        .map_err(|_| SignerError::LibraryUnavailable("context registry poisoned".into()))?;
    if let Some(ctx) = map.get(module) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(module)
        .map_err(|e| SignerError::LibraryUnavailable(format!("{}: {e}", module.display())))?;
    match ctx.initialize(CInitializeArgs::OsThreads) {
        Ok(()) | Err(CkError::AlreadyInitialized) => {}
        Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(SignerError::LibraryUnavailable(format!(
                "{}: {e}",
                module.display()
            )));
        }
    }
    map.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

fn find_slot(ctx: &Pkcs11, label: &str) -> Result<Slot, SignerError> {
    let slots = ctx
        .get_slots_with_initialized_token()
        .map_err(|e| SignerError::LibraryUnavailable(e.to_string()))?;
    for slot in slots {
        if let Ok(info) = ctx.get_token_info(slot)
            && info.label().trim_end() == label
        {
            return Ok(slot);
        }
    }
    Err(SignerError::TokenNotFound(label.to_owned()))
}

fn login(session: &Session, token: &str, pin: &str) -> Result<(), SignerError> {
    match session.login(UserType::User, Some(&AuthPin::new(pin.into()))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(
            RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
            _,
        )) => Err(SignerError::PinIncorrect(token.to_owned())),
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
            Err(SignerError::PinIncorrect(format!("{token} (PIN locked)")))
        }
        Err(e) => Err(map_device(token, e)),
    }
}

fn map_device(token: &str, e: CkError) -> SignerError {
    match e {
        CkError::Pkcs11(
            RvError::DeviceRemoved
            | RvError::TokenNotPresent
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed,
            _,
        ) => SignerError::TokenNotFound(token.to_owned()),
        other => SignerError::DeviceFailure(other.to_string()),
    }
}

/// A P-256 key on a PKCS#11 token.
///
/// An HSM that restarts, a token pulled out and put back, or a login the
/// token dropped invalidate the sessions and key handles a process holds.
/// A signature that fails that way opens a new session for its slot of
/// the pool, logs in again, finds the key again, checks that it is the
/// same key (same public key: the label now naming another key is
/// refused, never signed with) and signs once more. So a till sees one
/// slow seal, not a signer dead until the server restarts. To log in
/// again the signer keeps its [`PinSource`]: an environment variable or a
/// file is read again then, a PIN given as a value stays in memory
/// (zeroized on drop, redacted from `Debug`).
pub struct Pkcs11Signer {
    ctx: Pkcs11,
    token: String,
    key_label: String,
    pin: PinSource,
    public: PublicKey,
    /// Each pooled session with the key's handle as that session found it.
    sessions: Vec<Mutex<(Session, ObjectHandle)>>,
    next: AtomicUsize,
}

/// Whether `e` says the token forgot this session, its login or the key
/// handle (rather than refusing the operation itself).
fn session_lost(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid,
            _,
        )
    )
}

/// Finds the private key labelled `key_label` and reads its public half.
fn find_key(
    session: &Session,
    token: &str,
    key_label: &str,
) -> Result<(ObjectHandle, PublicKey), SignerError> {
    let label = key_label.as_bytes().to_vec();
    // Exactly one of each: with two pairs under one label, the private
    // key found first and the public key found first need not belong
    // together, and every signature would fail verification.
    let only = |found: Vec<ObjectHandle>, what: &str| match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(SignerError::KeyNotFound(format!("{key_label}{what}"))),
        many => Err(SignerError::KeyNotFound(format!(
            "{key_label}{what}: the label names {} objects on {token}, it must name one",
            many.len()
        ))),
    };
    let key = only(
        session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::Label(label.clone()),
            ])
            .map_err(|e| map_device(token, e))?,
        "",
    )?;
    let public_handle = only(
        session
            .find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Label(label),
            ])
            .map_err(|e| map_device(token, e))?,
        " (public key object)",
    )?;
    let attrs = session
        .get_attributes(
            public_handle,
            &[AttributeType::EcPoint, AttributeType::EcParams],
        )
        .map_err(|e| map_device(token, e))?;
    let mut point = None;
    for a in attrs {
        match a {
            Attribute::EcPoint(p) => point = Some(p),
            Attribute::EcParams(p) if p != P256_EC_PARAMS => {
                return Err(SignerError::KeyNotFound(format!(
                    "{key_label} is not a P-256 key"
                )));
            }
            _ => {}
        }
    }
    let point =
        point.ok_or_else(|| SignerError::KeyNotFound(format!("{key_label} has no EC point")))?;
    let public = PublicKey::from_sec1(unwrap_octet_string(&point))
        .map_err(|e| SignerError::KeyNotFound(format!("{key_label}: {e}")))?;
    Ok((key, public))
}

impl fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("token", &self.token)
            .field("key_id", &self.public.key_id())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Pkcs11Signer {
    /// Loads the module, finds the token and key, logs in and opens the
    /// session pool.
    ///
    /// # Errors
    /// [`SignerError::LibraryUnavailable`], [`SignerError::TokenNotFound`],
    /// [`SignerError::PinUnavailable`], [`SignerError::PinIncorrect`] or
    /// [`SignerError::KeyNotFound`], saying which.
    pub fn open(config: &Pkcs11Config) -> Result<Self, SignerError> {
        let ctx = context(&config.module)?;
        let slot = find_slot(&ctx, &config.token_label)?;
        let pin = config.pin.read()?;
        let token = config.token_label.clone();
        let mut sessions = Vec::with_capacity(config.sessions.max(1));
        for _ in 0..config.sessions.max(1) {
            let s = ctx
                .open_ro_session(slot)
                .map_err(|e| map_device(&token, e))?;
            login(&s, &token, &pin)?;
            sessions.push(s);
        }
        let mut pool = Vec::with_capacity(sessions.len());
        let mut public: Option<PublicKey> = None;
        for session in sessions {
            let (key, found) = find_key(&session, &token, &config.key_label)?;
            public = Some(found);
            pool.push(Mutex::new((session, key)));
        }
        let public = public.ok_or_else(|| SignerError::KeyNotFound(config.key_label.clone()))?;
        Ok(Self {
            ctx,
            token,
            key_label: config.key_label.clone(),
            pin: config.pin.clone(),
            public,
            sessions: pool,
            next: AtomicUsize::new(0),
        })
    }

    /// A new session on the token (found again by label: after a
    /// re-insert its slot may differ), logged in, with the key found
    /// again and checked to be the same key.
    fn reopen(&self) -> Result<(Session, ObjectHandle), SignerError> {
        let slot = find_slot(&self.ctx, &self.token)?;
        let session = self
            .ctx
            .open_ro_session(slot)
            .map_err(|e| map_device(&self.token, e))?;
        login(&session, &self.token, &self.pin.read()?)?;
        let (key, public) = find_key(&session, &self.token, &self.key_label)?;
        if public != self.public {
            return Err(SignerError::KeyNotFound(format!(
                "{}: the token now holds another key under this label (key id {}, expected {})",
                self.key_label,
                public.key_id(),
                self.public.key_id()
            )));
        }
        Ok((session, key))
    }
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the SEC1 point (some tokens
/// return the bare point); accept both.
fn unwrap_octet_string(bytes: &[u8]) -> &[u8] {
    match bytes {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        [0x04, 0x81, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        _ => bytes,
    }
}

impl Signer for Pkcs11Signer {
    fn key_id(&self) -> &str {
        self.public.key_id()
    }

    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, digest: &[u8; 32]) -> Result<SignOutput, SignerError> {
        let n = self.sessions.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        // Take a free session if there is one, else wait on ours.
        let mut guard = (0..n)
            .find_map(|i| self.sessions[(start + i) % n].try_lock().ok())
            .map(Ok)
            .unwrap_or_else(|| self.sessions[start].lock())
            .map_err(|_| SignerError::DeviceFailure("session lock poisoned".into()))?;
        let raw = match guard.0.sign(&Mechanism::Ecdsa, guard.1, digest) {
            Ok(raw) => raw,
            Err(e) if session_lost(&e) => {
                // Replaces this pool slot's session (the old one is
                // closed, or its close refused, on drop), then one retry.
                *guard = self.reopen()?;
                guard
                    .0
                    .sign(&Mechanism::Ecdsa, guard.1, digest)
                    .map_err(|e| map_device(&self.token, e))?
            }
            Err(e) => return Err(map_device(&self.token, e)),
        };
        let signature = Signature::from_raw_normalized(&raw)
            .map_err(|e| SignerError::DeviceFailure(e.to_string()))?;
        Ok(SignOutput {
            signature,
            device_counter: None,
        })
    }
}

/// Token provisioning: initialize a token in a free slot and generate a
/// non-extractable P-256 key pair inside it. Used by the tests (against
/// SoftHSM2) and available to operators' tooling.
pub mod provision {
    use super::*;

    /// Initializes the first uninitialized slot as a token with `label`,
    /// SO PIN `so_pin`, and user PIN `user_pin`.
    ///
    /// # Errors
    /// [`SignerError`] naming the step that failed.
    pub fn init_token(
        module: &Path,
        label: &str,
        so_pin: &str,
        user_pin: &str,
    ) -> Result<(), SignerError> {
        let ctx = context(module)?;
        let slots = ctx
            .get_all_slots()
            .map_err(|e| SignerError::LibraryUnavailable(e.to_string()))?;
        let slot = slots
            .into_iter()
            .find(|s| ctx.get_token_info(*s).is_ok_and(|i| !i.token_initialized()))
            .ok_or_else(|| SignerError::TokenNotFound("(no free slot)".into()))?;
        let so = AuthPin::new(so_pin.into());
        ctx.init_token(slot, &so, label)
            .map_err(|e| SignerError::DeviceFailure(e.to_string()))?;
        let session = ctx
            .open_rw_session(slot)
            .map_err(|e| map_device(label, e))?;
        session
            .login(UserType::So, Some(&so))
            .map_err(|e| map_device(label, e))?;
        session
            .init_pin(&AuthPin::new(user_pin.into()))
            .map_err(|e| map_device(label, e))?;
        session.logout().map_err(|e| map_device(label, e))?;
        Ok(())
    }

    /// Generates a P-256 key pair labelled `key_label` on the token: the
    /// private half is sensitive and never extractable.
    ///
    /// # Errors
    /// [`SignerError`] naming the step that failed.
    pub fn generate_key(
        module: &Path,
        token_label: &str,
        pin: &PinSource,
        key_label: &str,
    ) -> Result<PublicKey, SignerError> {
        let ctx = context(module)?;
        let slot = find_slot(&ctx, token_label)?;
        let session = ctx
            .open_rw_session(slot)
            .map_err(|e| map_device(token_label, e))?;
        login(&session, token_label, &pin.read()?)?;
        let label = key_label.as_bytes().to_vec();
        let public_template = [
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::EcParams(P256_EC_PARAMS.to_vec()),
            Attribute::Label(label.clone()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label),
        ];
        let (public, _) = session
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &public_template,
                &private_template,
            )
            .map_err(|e| SignerError::DeviceFailure(e.to_string()))?;
        let attrs = session
            .get_attributes(public, &[AttributeType::EcPoint])
            .map_err(|e| map_device(token_label, e))?;
        let point = attrs
            .into_iter()
            .find_map(|a| {
                if let Attribute::EcPoint(p) = a {
                    Some(p)
                } else {
                    None
                }
            })
            .ok_or_else(|| SignerError::KeyNotFound(key_label.to_owned()))?;
        PublicKey::from_sec1(unwrap_octet_string(&point))
            .map_err(|e| SignerError::KeyNotFound(e.to_string()))
    }
}
