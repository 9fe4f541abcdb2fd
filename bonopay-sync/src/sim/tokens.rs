//! The e-MCF's HS256 tokens: issuing them with the DGI's claims, refusing
//! expired, badly signed or revoked ones, and revocation by NIF or for
//! all (as when the DGI portal renews a taxpayer's token).

use super::*;

/// A revocation: tokens issued before it (by sequence number, or by time
/// for tokens of an earlier run signed with the same key) are refused.
#[derive(Debug, Clone, Copy)]
pub(super) struct Revocation {
    pub(super) seq: u64,
    pub(super) secs: i64,
}

impl Revocation {
    pub(super) fn refuses(self, claims: &jwt::Claims) -> bool {
        claims.seq < self.seq || claims.iat < self.secs
    }
}

impl Simulator {
    /// A bearer token for the configured NIF and e-MCF id, valid for
    /// `ttl_secs` from the clock's now.
    #[must_use]
    pub fn issue_token(&self, ttl_secs: i64) -> String {
        self.issue_token_for(&self.config.nif, &self.config.emcf_id, ttl_secs)
    }

    /// A bearer token for any NIF and e-MCF id (one taxpayer's e-MCF),
    /// valid for `ttl_secs` from the clock's now (negative for an already
    /// expired one).
    #[must_use]
    pub fn issue_token_for(&self, nif: &str, emcf_id: &str, ttl_secs: i64) -> String {
        let now = self.clock.now_ms().div_euclid(1000);
        let seq = self.token_seq.fetch_add(1, Ordering::SeqCst);
        jwt::issue(
            &self.config.secret,
            &self.config.issuer,
            nif,
            emcf_id,
            now,
            now.saturating_add(ttl_secs),
            seq,
        )
    }

    /// Refuses (401) every token issued before now, for every NIF, however
    /// long it still had to run: a token the DGI refuses before its
    /// expiry. Tokens issued afterwards are accepted. Returns the
    /// revocation time (clock milliseconds).
    pub fn revoke_tokens(&self) -> i64 {
        let r = self.revocation();
        lock(&self.state).revoked_all = Some(r);
        r.secs.saturating_mul(1000)
    }

    /// As [`Simulator::revoke_tokens`], for one NIF's tokens only.
    pub fn revoke_tokens_of(&self, nif: &str) -> i64 {
        let r = self.revocation();
        lock(&self.state).revoked_nif.insert(nif.to_owned(), r);
        r.secs.saturating_mul(1000)
    }

    pub(super) fn revocation(&self) -> Revocation {
        Revocation {
            seq: self.token_seq.load(Ordering::SeqCst),
            secs: self.clock.now_ms().div_euclid(1000),
        }
    }

    /// Checks the `Authorization` header.
    pub(crate) fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<jwt::Claims, ApiError> {
        let now = self.clock.now_ms().div_euclid(1000);
        let claims = jwt::verify(&self.config.secret, &self.config.issuer, authorization, now)
            .map_err(|e| ApiError::new(401, codes::PROCESSING, e.desc()))?;
        let st = lock(&self.state);
        let revoked = st.revoked_all.is_some_and(|r| r.refuses(&claims))
            || st
                .revoked_nif
                .get(&claims.nif)
                .is_some_and(|r| r.refuses(&claims));
        if revoked {
            return Err(ApiError::new(
                401,
                codes::PROCESSING,
                "token revoked: request a new one from the DGI portal",
            ));
        }
        Ok(claims)
    }
}
