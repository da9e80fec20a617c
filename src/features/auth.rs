//! Socket and join authentication: JSON Web Tokens (HS256 with the server's secret; RS256 and
//! ES256 with the public keys of a studio's identity provider), verified by the
//! `jsonwebtoken` crate.
//!
//! A socket connects with `?token=<jwt>` (phoenix.js `params: {token}`); the token's claims
//! become the socket's assigns ([`Identity`]: the user and the allowed `rooms`). A join may carry its
//! own `{"token": ...}`, which then decides the identity and the topics of that join. Topic
//! patterns in `rooms` are exact (`document:42`) or prefixes (`room:*`); without a `rooms` claim
//! every routed topic may be joined.
//!
//! Each key is pinned to one algorithm: a token is checked only against the keys of the `alg`
//! its header names (and of its `kid`, when both name one), so `none` and algorithm confusion
//! (an HS256 token "signed" with an RSA public key) are refused. The signature is checked before
//! the claims are parsed; expiry and not-before are checked against a time given by the caller.

use crate::core::{
    Channel, ChannelCtx, ConnectInfo, ConnectRefused, HandleIn, HandleInfo, Payload, SocketHandler,
    TerminateReason,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Name of the generated secret's file in the data directory.
pub const SECRET_FILE: &str = "auth_secret";
/// Longest accepted `sub` and `name` claims, in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Longest accepted token, in bytes (a query parameter or a join payload field).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts with a JSON header.
    #[error("token is not a well-formed JWT")]
    Malformed,
    /// No configured key takes the header's `alg` (and `kid`).
    #[error("token algorithm is not accepted")]
    UnsupportedAlgorithm,
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// Past `exp`.
    #[error("token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("token is not valid yet")]
    NotYetValid,
    /// Missing or out-of-range claims.
    #[error("token claims are invalid: {0}")]
    InvalidClaims(String),
}

/// Errors setting up authentication.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The secret file exists but cannot be read.
    #[error("cannot read the auth secret {path}: {source}")]
    ReadSecret {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A generated secret cannot be stored.
    #[error("cannot store a generated auth secret in {path}: {source}")]
    WriteSecret {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The stored secret is too short to be safe.
    #[error("the auth secret in {path} is shorter than 32 bytes")]
    WeakSecret {
        /// The file.
        path: PathBuf,
    },
    /// The OS gave no randomness.
    #[error("no randomness available for a secret: {0}")]
    Random(String),
    /// A configured public key cannot be read or parsed.
    #[error("auth public key {name}: {reason}")]
    PublicKey {
        /// Its `kid`, or its file.
        name: String,
        /// Why.
        reason: String,
    },
}

/// The claims of a shardcast token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id (presence key, message author).
    pub sub: String,
    /// Display name.
    pub name: String,
    /// Avatar URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Topic patterns the user may join (`room:*`, `document:42`); absent: any routed topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
}

impl Claims {
    /// Claims for `sub`/`name` valid for `ttl` seconds from now.
    pub fn new(sub: impl Into<String>, name: impl Into<String>, ttl_secs: u64) -> Claims {
        let now = unix_now();
        Claims {
            sub: sub.into(),
            name: name.into(),
            avatar: None,
            exp: now.saturating_add(ttl_secs),
            iat: Some(now),
            nbf: None,
            rooms: None,
        }
    }

    fn check(&self) -> Result<(), TokenError> {
        let bad = |what: &str| Err(TokenError::InvalidClaims(what.to_string()));
        if self.sub.is_empty() || self.sub.len() > MAX_ID_BYTES {
            return bad("sub must be 1-128 bytes");
        }
        if self.name.trim().is_empty() || self.name.len() > MAX_ID_BYTES {
            return bad("name must be 1-128 bytes");
        }
        if self.avatar.as_ref().is_some_and(|a| a.len() > 2048) {
            return bad("avatar must be at most 2048 bytes");
        }
        if self
            .rooms
            .as_ref()
            .is_some_and(|r| r.len() > 256 || r.iter().any(|p| p.is_empty() || p.len() > 255))
        {
            return bad("rooms must be at most 256 patterns of 1-255 bytes");
        }
        Ok(())
    }
}

/// A verification key pinned to one algorithm.
struct VerifyKey {
    alg: Algorithm,
    kid: Option<String>,
    key: DecodingKey,
}

/// Signs tokens with the server's HS256 secret, and verifies them with that secret and any
/// configured RS256/ES256 public keys.
pub struct Authenticator {
    /// `None` for an empty secret: verification by public keys only.
    signing: Option<EncodingKey>,
    keys: Vec<VerifyKey>,
    allow_anonymous: bool,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|k| {
                format!(
                    "{:?}{}",
                    k.alg,
                    k.kid
                        .as_deref()
                        .map(|k| format!(" ({k})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        f.debug_struct("Authenticator")
            .field("keys", &keys)
            .field("allow_anonymous", &self.allow_anonymous)
            .finish()
    }
}

/// The part of a token header read before a key is chosen.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl Authenticator {
    /// An authenticator with one HS256 `key` (signing and verifying). An empty key means none:
    /// only the public keys added with [`Authenticator::with_public_key`] verify, and nothing
    /// can be signed.
    pub fn new(key: impl Into<Vec<u8>>, allow_anonymous: bool) -> Authenticator {
        let key = key.into();
        let (signing, verify) = match (
            EncodingKey::from_secret(&key),
            DecodingKey::from_secret(&key),
        ) {
            (Ok(s), Ok(v)) => (Some(s), Some(v)),
            _ => (None, None),
        };
        Authenticator {
            signing,
            keys: verify
                .into_iter()
                .map(|key| VerifyKey {
                    alg: Algorithm::HS256,
                    kid: None,
                    key,
                })
                .collect(),
            allow_anonymous,
        }
    }

    /// Also accepts tokens signed by the holder of the private half of `pem` (a PEM public
    /// key), with `alg` only, and only tokens naming `kid` when both the key and the token have
    /// one.
    pub fn with_public_key(
        mut self,
        alg: KeyAlgorithm,
        kid: Option<String>,
        pem: &[u8],
    ) -> Result<Authenticator, AuthError> {
        let refuse = |reason: String| AuthError::PublicKey {
            name: kid.clone().unwrap_or_else(|| format!("{alg:?}")),
            reason,
        };
        // The key must be of the pinned kind: an RSA key for RS256, a P-256 key for ES256 (a
        // P-384 key would load and then refuse every token).
        if !pem_key_matches(pem, alg) {
            return Err(refuse(format!("not a {alg:?} public key")));
        }
        let parsed = match alg {
            KeyAlgorithm::RS256 => DecodingKey::from_rsa_pem(pem),
            KeyAlgorithm::ES256 => DecodingKey::from_ec_pem(pem),
        };
        let key = parsed.map_err(|e| refuse(e.to_string()))?;
        let alg = match alg {
            KeyAlgorithm::RS256 => Algorithm::RS256,
            KeyAlgorithm::ES256 => Algorithm::ES256,
        };
        self.keys.push(VerifyKey { alg, kid, key });
        Ok(self)
    }

    /// The authenticator `serve` uses for `[auth]`: the configured secret, or the one stored
    /// in (or generated into) the data directory, and the configured public keys.
    pub fn from_config(
        config: &AuthConfig,
        data_dir: &Path,
    ) -> Result<(Authenticator, SecretSource), AuthError> {
        let (key, source) = resolve_secret(config, data_dir)?;
        let mut auth = Authenticator::new(key, config.allow_anonymous);
        for k in &config.public_keys {
            let pem = match (&k.pem, &k.pem_file) {
                (Some(pem), _) => pem.clone().into_bytes(),
                (None, Some(file)) => std::fs::read(file).map_err(|e| AuthError::PublicKey {
                    name: file.display().to_string(),
                    reason: e.to_string(),
                })?,
                (None, None) => {
                    return Err(AuthError::PublicKey {
                        name: k.kid.clone().unwrap_or_else(|| format!("{:?}", k.alg)),
                        reason: "needs pem or pem_file".into(),
                    })
                }
            };
            auth = auth.with_public_key(k.alg, k.kid.clone(), &pem)?;
        }
        Ok((auth, source))
    }

    /// Whether sockets without a token are admitted as guests.
    pub fn allow_anonymous(&self) -> bool {
        self.allow_anonymous
    }

    /// A compact JWS (`header.claims.signature`) signed with the HS256 secret.
    ///
    /// # Panics
    /// When the authenticator was made with an empty secret (it has nothing to sign with).
    pub fn sign(&self, claims: &Claims) -> String {
        let key = self
            .signing
            .as_ref()
            .expect("an authenticator made with an empty HS256 secret cannot sign");
        jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), claims, key)
            .expect("claims serialize to JSON and HS256 signs with any key")
    }

    /// Checks `token` at time `now` (seconds since the epoch) and returns its claims.
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES || token.split('.').count() != 3 {
            return Err(TokenError::Malformed);
        }
        let header: Header = token
            .split('.')
            .next()
            .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or(TokenError::Malformed)?;
        let alg = match header.alg.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            _ => return Err(TokenError::UnsupportedAlgorithm),
        };
        let candidates = self.keys.iter().filter(|k| {
            k.alg == alg
                && match (&k.kid, &header.kid) {
                    (Some(mine), Some(theirs)) => mine == theirs,
                    _ => true,
                }
        });
        let mut validation = Validation::new(alg);
        // Time claims are checked below against `now`; no audience or issuer is required.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let mut outcome = Err(TokenError::UnsupportedAlgorithm);
        for key in candidates {
            match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
                Ok(data) => {
                    outcome = Ok(data.claims);
                    break;
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    outcome = Err(match e.kind() {
                        ErrorKind::InvalidSignature => TokenError::BadSignature,
                        ErrorKind::InvalidAlgorithm => TokenError::UnsupportedAlgorithm,
                        ErrorKind::Json(_) => {
                            TokenError::InvalidClaims("the claims are not a JSON object".into())
                        }
                        _ => TokenError::Malformed,
                    });
                }
            }
        }
        let claims: Claims = serde_json::from_value(outcome?)
            .map_err(|_| TokenError::InvalidClaims("sub, name and exp are required".into()))?;
        claims.check()?;
        if now >= claims.exp {
            return Err(TokenError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| now < nbf) {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    /// Checks `token` now.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_at(token, unix_now())
    }
}

/// Whether a PEM public key (SubjectPublicKeyInfo) names the algorithm's key type: the
/// rsaEncryption OID for RS256, the P-256 curve OID for ES256.
fn pem_key_matches(pem: &[u8], alg: KeyAlgorithm) -> bool {
    const RSA: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let text = String::from_utf8_lossy(pem);
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
        .split_whitespace()
        .collect();
    let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body) else {
        return false;
    };
    let oid = match alg {
        KeyAlgorithm::RS256 => RSA,
        KeyAlgorithm::ES256 => P256,
    };
    der.windows(oid.len()).any(|w| w == oid)
}

/// Whether `topic` matches one of `patterns` (`prefix*` or exact).
pub fn topic_allowed(patterns: &[String], topic: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => topic == p,
    })
}

/// Where the signing key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `[auth] secret`.
    Configured,
    /// The file in the data directory, created by this call.
    Generated(PathBuf),
    /// The file in the data directory, created earlier.
    Stored(PathBuf),
}

/// The HS256 key for `[auth]`: its `secret`, else `<data_dir>/auth_secret` (created with a
/// fresh random secret and mode 0600 when missing; concurrent creators agree on one file).
pub fn resolve_secret(
    config: &AuthConfig,
    data_dir: &Path,
) -> Result<(Vec<u8>, SecretSource), AuthError> {
    if !config.secret.is_empty() {
        return Ok((config.secret.as_bytes().to_vec(), SecretSource::Configured));
    }
    let path = data_dir.join(SECRET_FILE);
    match read_secret(&path)? {
        Some(key) => Ok((key, SecretSource::Stored(path))),
        None => {
            let created = create_secret(data_dir, &path)?;
            // Another process may have won the race: the file on disk is the secret.
            let key = read_secret(&path)?.ok_or_else(|| AuthError::ReadSecret {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "vanished"),
            })?;
            let source = if created {
                SecretSource::Generated(path)
            } else {
                SecretSource::Stored(path)
            };
            Ok((key, source))
        }
    }
}

fn read_secret(path: &Path) -> Result<Option<Vec<u8>>, AuthError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = text.trim().as_bytes().to_vec();
            if key.len() < 32 {
                return Err(AuthError::WeakSecret {
                    path: path.to_owned(),
                });
            }
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "auth secret file is readable by other users; chmod 600 it");
                }
            }
            Ok(Some(key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AuthError::ReadSecret {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes a new secret to a private temporary file, then links it into place (atomic, and it
/// fails if the file exists). Returns whether this call created it.
fn create_secret(dir: &Path, path: &Path) -> Result<bool, AuthError> {
    let write_err = |source| AuthError::WriteSecret {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(write_err)?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{SECRET_FILE}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(hex.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result.map_err(write_err)
}

/// Unix milliseconds as token time (seconds), zero before the epoch.
fn unix_secs(ms: i64) -> u64 {
    u64::try_from(ms / 1000).unwrap_or(0)
}

/// Seconds since the Unix epoch (token times), read from the clock: for minting tokens at the
/// edge ([`Claims::new`], [`Authenticator::verify`]); channels check against the event's time.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// --- Identity in assigns -------------------------------------------------------------------

/// Who a channel acts for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// The user id (`sub`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Avatar URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
}

impl User {
    /// `{id, name}`, as events show a user.
    pub fn summary(&self) -> Value {
        json!({ "id": self.id, "name": self.name })
    }
}

/// Who a socket is: the assigns [`TokenAuth`] gives every socket it accepts, read by channels
/// with `ctx.assigns::<Identity>()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's user (or a guest).
    pub user: User,
    /// Topic patterns the token allows (`None`: every routed topic).
    pub rooms: Option<Vec<String>>,
    /// A guest admitted by `allow_anonymous`, not a token holder.
    pub anonymous: bool,
}

impl Identity {
    fn from_claims(claims: Claims) -> Identity {
        Identity {
            user: User {
                id: claims.sub,
                name: claims.name,
                avatar: claims.avatar,
            },
            rooms: claims.rooms,
            anonymous: false,
        }
    }

    fn guest(info: &ConnectInfo) -> Identity {
        let mut id = [0u8; 8];
        // A guest id only needs to be unlikely to collide; a clock fallback keeps demos running.
        if getrandom::fill(&mut id).is_err() {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            id = nanos.to_le_bytes();
        }
        let name = info
            .param("name")
            .map(str::trim)
            .filter(|n| !n.is_empty() && n.len() <= 64)
            .unwrap_or("guest");
        Identity {
            user: User {
                id: format!("guest-{}", u64::from_le_bytes(id) & 0xffff_ffff_ffff),
                name: name.to_string(),
                avatar: None,
            },
            rooms: None,
            anonymous: true,
        }
    }
}

/// The socket connect hook: a valid `token` parameter, or a guest when anonymous sockets are
/// allowed. Refusals become HTTP 403 before any WebSocket exists.
#[derive(Debug, Clone)]
pub struct TokenAuth {
    auth: Arc<Authenticator>,
}

impl TokenAuth {
    /// A connect hook checking tokens with `auth`.
    pub fn new(auth: Arc<Authenticator>) -> TokenAuth {
        TokenAuth { auth }
    }
}

impl SocketHandler for TokenAuth {
    type Assigns = Identity;

    fn connect(&self, info: &ConnectInfo) -> Result<Identity, ConnectRefused> {
        match info.param("token").filter(|t| !t.is_empty()) {
            Some(token) => self
                .auth
                .verify_at(token, unix_secs(info.now.unix_ms))
                .map(Identity::from_claims)
                .map_err(|e| {
                    tracing::debug!(peer = %info.peer, error = %e, "socket token refused");
                    ConnectRefused {
                        reason: e.to_string(),
                    }
                }),
            None if self.auth.allow_anonymous => Ok(Identity::guest(info)),
            None => Err(ConnectRefused {
                reason: "a token is required".into(),
            }),
        }
    }
}

/// Why a join is refused; the reply is `{"reason": ...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinDenied {
    /// The join's token is not valid.
    InvalidToken,
    /// The identity may not join this topic.
    AccessDenied,
}

impl JoinDenied {
    /// The reply's `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            JoinDenied::InvalidToken => "invalid_token",
            JoinDenied::AccessDenied => "access_denied",
        }
    }

    /// The reply payload `{"reason": ...}`.
    pub fn payload(self) -> Payload {
        Payload::json(&json!({ "reason": self.reason() }))
    }
}

/// [`authorize_join`] for the channel being joined: its socket's identity, topic and time; a
/// refusal is the join's error reply.
pub fn authorize_channel_join<I: Send + 'static>(
    auth: &Authenticator,
    ctx: &ChannelCtx<'_, I>,
    params: &Value,
) -> Result<User, Payload> {
    authorize_join(
        auth,
        ctx.assigns::<Identity>(),
        params,
        ctx.topic(),
        ctx.now().unix_ms,
    )
    .map_err(JoinDenied::payload)
}

/// Decides who joins `topic`: the join payload's `token` when present (its identity and
/// `rooms`), else the socket's. A join token of another user than the socket's is refused.
pub fn authorize_join(
    auth: &Authenticator,
    socket: Option<&Identity>,
    payload: &Value,
    topic: &str,
    now_ms: i64,
) -> Result<User, JoinDenied> {
    let socket_user = socket.map(|s| s.user.clone());
    let anonymous = socket.is_some_and(|s| s.anonymous);
    let (user, rooms) = match payload.get("token") {
        None | Some(Value::Null) => {
            let user = socket_user.ok_or(JoinDenied::AccessDenied)?;
            (user, socket.and_then(|s| s.rooms.clone()))
        }
        Some(Value::String(token)) => {
            let claims = auth
                .verify_at(token, unix_secs(now_ms))
                .map_err(|_| JoinDenied::InvalidToken)?;
            if let Some(socket_user) = socket_user.filter(|_| !anonymous) {
                if socket_user.id != claims.sub {
                    return Err(JoinDenied::AccessDenied);
                }
            }
            let user = User {
                id: claims.sub,
                name: claims.name,
                avatar: claims.avatar,
            };
            (user, claims.rooms)
        }
        Some(_) => return Err(JoinDenied::InvalidToken),
    };
    match rooms {
        Some(patterns) if !topic_allowed(&patterns, topic) => Err(JoinDenied::AccessDenied),
        _ => Ok(user),
    }
}

/// Puts the per-topic access check (`rooms` claim, join token) in front of a channel that has
/// none of its own, such as `echo:*`.
pub struct Guarded<C> {
    auth: Arc<Authenticator>,
    inner: C,
}

impl<C: Channel> Guarded<C> {
    /// `inner`, joined only by identities `auth` lets in.
    pub fn new(auth: Arc<Authenticator>, inner: C) -> Guarded<C> {
        Guarded { auth, inner }
    }
}

impl<C: Channel> Channel for Guarded<C> {
    type Info = C::Info;

    fn join(
        &mut self,
        ctx: &mut ChannelCtx<'_, C::Info>,
        payload: Payload,
    ) -> Result<Payload, Payload> {
        let params: Value = payload.parse().unwrap_or(Value::Null);
        authorize_channel_join(&self.auth, ctx, &params)?;
        self.inner.join(ctx, payload)
    }

    fn handle_in(
        &mut self,
        ctx: &mut ChannelCtx<'_, C::Info>,
        event: &str,
        payload: Payload,
    ) -> HandleIn {
        self.inner.handle_in(ctx, event, payload)
    }

    fn handle_info(&mut self, ctx: &mut ChannelCtx<'_, C::Info>, msg: C::Info) -> HandleInfo {
        self.inner.handle_info(ctx, msg)
    }

    fn terminate(&mut self, ctx: &mut ChannelCtx<'_, C::Info>, reason: TerminateReason) {
        self.inner.terminate(ctx, reason)
    }
}

// --- Configuration (this feature's section of the config file) ---------------------

/// `[auth]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 key for socket and join tokens (at least 32 bytes). Empty: a random secret is
    /// generated once into `<data_dir>/auth_secret` (mode 0600) and a warning is logged.
    pub secret: String,
    /// Accept sockets without a token as guests (local demos). A token that is present is
    /// still checked.
    pub allow_anonymous: bool,
    /// Public keys of identity providers whose RS256/ES256 tokens are accepted too, each pinned
    /// to its algorithm: `[[auth.public_keys]] alg = "RS256", kid = "idp-1", pem_file = "..."`.
    pub public_keys: Vec<PublicKeyConfig>,
}

impl AuthConfig {
    /// Every invalid value of this section, with the reason (key names as in the file).
    pub fn problems(&self) -> Vec<String> {
        let checks = [(
            self.secret.is_empty() || self.secret.len() >= 32,
            "auth.secret must be empty (generated) or at least 32 bytes",
        )];
        crate::ops::checks::failed(&checks)
    }
}

/// An asymmetric algorithm a public key is pinned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
}

/// One accepted public key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyConfig {
    /// The only algorithm tokens checked with this key may use.
    pub alg: KeyAlgorithm,
    /// The key id tokens name in their header (`kid`); when both name one, they must match.
    #[serde(default)]
    pub kid: Option<String>,
    /// The PEM public key itself ...
    #[serde(default)]
    pub pem: Option<String>,
    /// ... or the file holding it.
    #[serde(default)]
    pub pem_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use hmac::{KeyInit, Mac};

    type HmacSha256 = hmac::Hmac<sha2::Sha256>;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now_ms() -> i64 {
        unix_now() as i64 * 1000
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/jwt")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn signed(alg: Algorithm, kid: Option<&str>, private_pem: &[u8], claims: &Claims) -> String {
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(private_pem),
            _ => EncodingKey::from_ec_pem(private_pem),
        }
        .unwrap();
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    #[test]
    fn identity_provider_keys_verify_their_algorithm_only() {
        let a = auth()
            .with_public_key(
                KeyAlgorithm::RS256,
                Some("idp-rsa".into()),
                &fixture("rs256-public.pem"),
            )
            .unwrap()
            .with_public_key(KeyAlgorithm::ES256, None, &fixture("es256-public.pem"))
            .unwrap();
        let rs = signed(
            Algorithm::RS256,
            Some("idp-rsa"),
            &fixture("rs256-private.pem"),
            &claims(),
        );
        assert_eq!(a.verify_at(&rs, 1_500), Ok(claims()));
        let es = signed(
            Algorithm::ES256,
            None,
            &fixture("es256-private.pem"),
            &claims(),
        );
        assert_eq!(a.verify_at(&es, 1_500), Ok(claims()));
        // Time claims and claim checks apply as for HS256.
        assert_eq!(a.verify_at(&rs, 2_000), Err(TokenError::Expired));
        // A kid naming another key is not checked against this one.
        let other_kid = signed(
            Algorithm::RS256,
            Some("idp-2"),
            &fixture("rs256-private.pem"),
            &claims(),
        );
        assert_eq!(
            a.verify_at(&other_kid, 1_500),
            Err(TokenError::UnsupportedAlgorithm)
        );
        // The RSA key's signature under the EC key's algorithm name: pinned, refused.
        let parts: Vec<&str> = rs.split('.').collect();
        let relabelled = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","typ":"JWT"}"#),
            parts[1],
            parts[2]
        );
        assert!(a.verify_at(&relabelled, 1_500).is_err());
        // Algorithm confusion: HS256 "signed" with the public key as the secret.
        let confused = Authenticator::new(fixture("rs256-public.pem"), false).sign(&claims());
        assert_eq!(a.verify_at(&confused, 1_500), Err(TokenError::BadSignature));
        // Without the public keys, RS256 is not accepted at all.
        assert_eq!(
            auth().verify_at(&rs, 1_500),
            Err(TokenError::UnsupportedAlgorithm)
        );
        // A key that is not PEM, or not of the pinned kind, is refused at setup.
        assert!(matches!(
            auth().with_public_key(KeyAlgorithm::RS256, None, b"not a key"),
            Err(AuthError::PublicKey { .. })
        ));
        for (alg, pem) in [
            (KeyAlgorithm::ES256, "rs256-public.pem"),
            (KeyAlgorithm::RS256, "es256-public.pem"),
            (KeyAlgorithm::ES256, "p384-public.pem"),
        ] {
            assert!(matches!(
                auth().with_public_key(alg, None, &fixture(pem)),
                Err(AuthError::PublicKey { .. })
            ));
        }
    }

    #[test]
    fn an_empty_secret_verifies_nothing_by_hs256() {
        let a = Authenticator::new(Vec::new(), false);
        assert_eq!(
            a.verify_at(&auth().sign(&claims()), 1_500),
            Err(TokenError::UnsupportedAlgorithm)
        );
    }

    fn auth() -> Authenticator {
        Authenticator::new(KEY, false)
    }

    fn claims() -> Claims {
        Claims {
            sub: "u1".into(),
            name: "Ada".into(),
            avatar: Some("https://example.test/a.png".into()),
            exp: 2_000,
            iat: Some(1_000),
            nbf: None,
            rooms: Some(vec!["room:*".into(), "document:42".into()]),
        }
    }

    #[test]
    fn signs_and_verifies() {
        let token = auth().sign(&claims());
        assert_eq!(auth().verify_at(&token, 1_500), Ok(claims()));
        assert_eq!(token.split('.').count(), 3);
    }

    #[test]
    fn known_vector_from_another_implementation() {
        // HS256 over {"sub":"1234567890","name":"John Doe","iat":1516239022} with the secret
        // "your-256-bit-secret" (the jwt.io example), plus the exp this server requires.
        let key = b"your-256-bit-secret";
        let a = Authenticator::new(&key[..], false);
        let header = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
        let body = URL_SAFE_NO_PAD.encode(br#"{"sub":"1234567890","name":"John Doe","exp":99}"#);
        let mut mac = HmacSha256::new_from_slice(key).unwrap();
        mac.update(format!("{header}.{body}").as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let c = a.verify_at(&format!("{header}.{body}.{sig}"), 10).unwrap();
        assert_eq!(
            (c.sub.as_str(), c.name.as_str(), c.exp),
            ("1234567890", "John Doe", 99)
        );
        // The jwt.io token itself lacks exp: refused as invalid claims, after its signature held.
        let jwtio = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        assert!(matches!(
            a.verify_at(jwtio, 10),
            Err(TokenError::InvalidClaims(_))
        ));
    }

    #[test]
    fn refuses_expired_early_tampered_and_foreign_tokens() {
        let a = auth();
        let token = a.sign(&claims());
        assert_eq!(a.verify_at(&token, 2_000), Err(TokenError::Expired));
        let mut early = claims();
        early.nbf = Some(1_600);
        assert_eq!(
            a.verify_at(&a.sign(&early), 1_500),
            Err(TokenError::NotYetValid)
        );
        let other = Authenticator::new(&b"another key that is long enough!!"[..], false);
        assert_eq!(
            other.verify_at(&token, 1_500),
            Err(TokenError::BadSignature)
        );
        // Claims swapped under the original signature.
        let mut forged = claims();
        forged.sub = "admin".into();
        let forged_body = a.sign(&forged).split('.').nth(1).unwrap().to_string();
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], forged_body, parts[2]);
        assert_eq!(a.verify_at(&tampered, 1_500), Err(TokenError::BadSignature));
        // alg=none and other algorithms.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            parts[1]
        );
        assert_eq!(
            a.verify_at(&none, 1_500),
            Err(TokenError::UnsupportedAlgorithm)
        );
        for bad in ["", "a.b", "a.b.c.d", "!!.??.**", &token[..token.len() - 1]] {
            assert!(a.verify_at(bad, 1_500).is_err(), "{bad}");
        }
    }

    #[test]
    fn claims_are_checked() {
        let a = auth();
        let mut c = claims();
        c.sub = String::new();
        assert!(matches!(
            a.verify_at(&a.sign(&c), 1_500),
            Err(TokenError::InvalidClaims(_))
        ));
        let mut c = claims();
        c.name = "x".repeat(200);
        assert!(a.verify_at(&a.sign(&c), 1_500).is_err());
    }

    #[test]
    fn topic_patterns() {
        let p = vec!["room:*".to_string(), "document:42".to_string()];
        assert!(topic_allowed(&p, "room:lobby"));
        assert!(topic_allowed(&p, "room:"));
        assert!(topic_allowed(&p, "document:42"));
        assert!(!topic_allowed(&p, "document:421"));
        assert!(!topic_allowed(&p, "rooms:1"));
        assert!(!topic_allowed(&[], "room:1"));
        assert!(topic_allowed(&["*".to_string()], "anything"));
    }

    #[test]
    fn join_authorization() {
        let a = Authenticator::new(KEY, false);
        let mut c = claims();
        c.exp = unix_now() + 60;
        let socket = Some(Identity::from_claims(c.clone()));
        let none = Value::Null;
        assert_eq!(
            authorize_join(&a, socket.as_ref(), &none, "room:1", now_ms()).map(|u| u.id),
            Ok("u1".to_string())
        );
        assert_eq!(
            authorize_join(&a, socket.as_ref(), &none, "game:1", now_ms()),
            Err(JoinDenied::AccessDenied)
        );
        // A join token widens the rooms of the same user.
        let mut wide = c.clone();
        wide.rooms = Some(vec!["game:*".into()]);
        let p = json!({ "token": a.sign(&wide) });
        assert!(authorize_join(&a, socket.as_ref(), &p, "game:1", now_ms()).is_ok());
        // ... but cannot switch users, and must be valid.
        let mut other = c.clone();
        other.sub = "u2".into();
        let p = json!({ "token": a.sign(&other) });
        assert_eq!(
            authorize_join(&a, socket.as_ref(), &p, "room:1", now_ms()),
            Err(JoinDenied::AccessDenied)
        );
        let p = json!({ "token": "garbage" });
        assert_eq!(
            authorize_join(&a, socket.as_ref(), &p, "room:1", now_ms()),
            Err(JoinDenied::InvalidToken)
        );
        let p = json!({ "token": 5 });
        assert_eq!(
            authorize_join(&a, socket.as_ref(), &p, "room:1", now_ms()),
            Err(JoinDenied::InvalidToken)
        );
        // Without a rooms claim, anything routed.
        let mut open = c;
        open.rooms = None;
        let socket = Some(Identity::from_claims(open));
        assert!(authorize_join(&a, socket.as_ref(), &none, "game:1", now_ms()).is_ok());
        // No identity at all (a socket accepted by another hook).
        assert_eq!(
            authorize_join(&a, None, &none, "room:1", now_ms()),
            Err(JoinDenied::AccessDenied)
        );
    }

    #[test]
    fn connect_hook() {
        let info = |params: &[(&str, &str)]| ConnectInfo {
            now: crate::core::Now {
                instant: std::time::Instant::now(),
                unix_ms: now_ms(),
            },
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            peer: ([127, 0, 0, 1], 1).into(),
        };
        let strict = TokenAuth::new(Arc::new(Authenticator::new(KEY, false)));
        assert!(strict.connect(&info(&[("vsn", "2.0.0")])).is_err());
        assert!(strict.connect(&info(&[("token", "x.y.z")])).is_err());
        let mut c = claims();
        c.exp = unix_now() + 60;
        let token = Authenticator::new(KEY, false).sign(&c);
        let assigns = strict.connect(&info(&[("token", &token)])).unwrap();
        assert_eq!(assigns.user.id, "u1");
        assert_eq!(
            assigns.rooms,
            Some(vec!["room:*".to_string(), "document:42".to_string()])
        );
        assert!(!assigns.anonymous);

        let open = TokenAuth::new(Arc::new(Authenticator::new(KEY, true)));
        let guest = open.connect(&info(&[("name", "Bo")])).unwrap();
        assert!(guest.user.id.starts_with("guest-"));
        assert_eq!(guest.user.name, "Bo");
        assert!(guest.anonymous);
        // A bad token is refused even when guests are allowed.
        assert!(open.connect(&info(&[("token", "bad")])).is_err());
    }

    #[test]
    fn generated_secret_is_private_stable_and_shared() {
        let dir = std::env::temp_dir().join(format!("shardcast-auth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = AuthConfig::default();
        let (k1, s1) = resolve_secret(&config, &dir).unwrap();
        assert_eq!(s1, SecretSource::Generated(dir.join(SECRET_FILE)));
        let mode = std::fs::metadata(dir.join(SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (k2, s2) = resolve_secret(&config, &dir).unwrap();
        assert_eq!(k1, k2);
        assert_eq!(s2, SecretSource::Stored(dir.join(SECRET_FILE)));
        assert_eq!(k1.len(), 64);
        config.secret = "c".repeat(32);
        assert_eq!(
            resolve_secret(&config, &dir).unwrap().1,
            SecretSource::Configured
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    proptest! {
        #[test]
        fn roundtrip_any_claims(
            sub in "[a-zA-Z0-9_:-]{1,40}",
            name in "\\PC{1,30}",
            exp in 1u64..u64::MAX / 2,
            rooms in proptest::option::of(proptest::collection::vec("[a-z]{1,8}:\\*?", 0..5)),
        ) {
            prop_assume!(!name.trim().is_empty());
            let a = auth();
            let c = Claims { sub, name, avatar: None, exp, iat: None, nbf: None, rooms };
            let token = a.sign(&c);
            prop_assert_eq!(a.verify_at(&token, exp - 1), Ok(c.clone()));
            prop_assert_eq!(a.verify_at(&token, exp), Err(TokenError::Expired));
        }

        #[test]
        fn any_single_byte_change_is_refused(pos in 0usize..200, byte in any::<u8>()) {
            let a = auth();
            let token = a.sign(&claims());
            let mut bytes = token.clone().into_bytes();
            let pos = pos % bytes.len();
            prop_assume!(bytes[pos] != byte);
            bytes[pos] = byte;
            if let Ok(t) = String::from_utf8(bytes) {
                // Base64 has a few encodings of the last symbol's spare bits; the decoded
                // token must then be the same one.
                if let Ok(c) = a.verify_at(&t, 1_500) {
                    prop_assert_eq!(c, claims());
                }
            }
        }
    }
}
