//! Token auth over real sockets: refusals at the handshake (HTTP 403), per-topic checks at join
//! (`rooms` claims, join tokens), guests when allowed, and the `token` subcommand signing with
//! the secret `serve` uses.

mod common;
use common::*;
use serde_json::json;
use shardcast::features::{Authenticator, Claims};
use std::os::unix::fs::PermissionsExt;

fn handshake_status(url: &str) -> u16 {
    match tungstenite::connect(url) {
        Ok(_) => 101,
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("{url}: {e}"),
    }
}

fn sign(claims: &Claims, key: &str) -> String {
    Authenticator::new(key, false).sign(claims)
}

#[test]
fn bad_expired_or_missing_tokens_are_refused_at_the_handshake() {
    let dir = TempDir::new("auth-handshake");
    let server = FeatureServer::start(&dir.0, |_| {});
    let base = format!("ws://{}/socket/websocket?vsn=2.0.0", server.addr);
    let mut expired = Claims::new("u1", "Ada", 0);
    expired.exp -= 1;
    let foreign = sign(
        &Claims::new("u1", "Ada", 60),
        "another secret of at least 32 bytes",
    );
    for url in [
        base.clone(),
        format!("{base}&token="),
        format!("{base}&token=not.a.jwt"),
        format!("{base}&token={}", sign(&expired, TEST_SECRET)),
        format!("{base}&token={foreign}"),
    ] {
        assert_eq!(handshake_status(&url), 403, "{url}");
    }
    assert_eq!(server.server().metric("connect_refused"), 5);
    assert_eq!(
        server.server().metric("connections"),
        0,
        "no half-open socket"
    );
    let good = sign(&Claims::new("u1", "Ada", 60), TEST_SECRET);
    assert_eq!(handshake_status(&format!("{base}&token={good}")), 101);
}

#[test]
fn joins_check_rooms_claims_and_join_tokens() {
    let dir = TempDir::new("auth-joins");
    let server = FeatureServer::start(&dir.0, |_| {});
    let token = server.token("u1", "Ada", Some(&["room:allowed", "collaboration:*"]));
    let mut c = Client::connect(&server.socket_url(&token));
    let denied = json!({"status": "error", "response": {"reason": "access_denied"}});
    let invalid = json!({"status": "error", "response": {"reason": "invalid_token"}});

    assert_eq!(c.join("room:allowed", json!({})).1["status"], "ok");
    assert_eq!(c.join("collaboration:doc1", json!({})).1["status"], "ok");
    assert_eq!(c.join("room:other", json!({})).1, denied);
    assert_eq!(
        c.join("echo:other", json!({})).1,
        denied,
        "echo is guarded too"
    );

    // A join token of the same user grants its own rooms.
    let wider = server.token("u1", "Ada", Some(&["room:*", "echo:*"]));
    assert_eq!(
        c.join("room:other", json!({"token": wider})).1["status"],
        "ok"
    );
    assert_eq!(c.join("echo:x", json!({"token": wider})).1["status"], "ok");
    // Garbage, expired, or another user's join tokens are refused.
    assert_eq!(c.join("room:x", json!({"token": "garbage"})).1, invalid);
    let mut old = Claims::new("u1", "Ada", 0);
    old.exp -= 1;
    assert_eq!(
        c.join("room:x", json!({"token": sign(&old, TEST_SECRET)}))
            .1,
        invalid
    );
    let bob = server.token("u2", "Bob", None);
    assert_eq!(c.join("room:x", json!({"token": bob})).1, denied);

    // Without a rooms claim every routed topic is open; unrouted ones are not ours to answer.
    let mut open = server.client("u3", "Cy");
    assert_eq!(open.join("room:any", json!({})).1["status"], "ok");
    assert_eq!(open.join("echo:any", json!({})).1["status"], "ok");
    assert_eq!(
        open.join("nowhere:1", json!({})).1,
        json!({"status": "error", "response": {"reason": "unmatched topic"}})
    );
}

#[test]
fn guests_join_only_when_anonymous_sockets_are_allowed() {
    let dir = TempDir::new("auth-guests");
    let server = FeatureServer::start(&dir.0, |c| c.auth.allow_anonymous = true);
    let base = format!("ws://{}/socket/websocket?vsn=2.0.0", server.addr);
    let mut guest = Client::connect(&format!("{base}&name=Visitor"));
    let (_, reply) = guest.join("room:demo", json!({}));
    assert_eq!(reply["status"], "ok");
    let user = &reply["response"]["user"];
    assert_eq!(user["name"], "Visitor");
    assert!(user["id"].as_str().unwrap().starts_with("guest-"));
    // A token, when given, must still be valid.
    assert_eq!(handshake_status(&format!("{base}&token=bad")), 403);
}

#[test]
fn the_token_subcommand_signs_with_the_secret_serve_uses() {
    let dir = TempDir::new("auth-cli");
    let mint = |args: &[&str]| -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shardcast"))
            .arg("token")
            .args(args)
            .arg("--data-dir")
            .arg(&dir.0)
            .env_remove("SHARDCAST_AUTH__SECRET")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let token = mint(&[
        "--sub", "u9", "--name", "Nine", "--rooms", "room:*", "echo:9",
    ]);
    let secret_file = dir.0.join("auth_secret");
    let mode = std::fs::metadata(&secret_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the generated secret is private");
    let short = mint(&["--sub", "u9", "--name", "Nine", "--ttl", "0"]);

    // `serve` with no configured secret and the same data directory accepts it.
    let server = FeatureServer::start(&dir.0, |c| c.auth.secret.clear());
    let mut c = Client::connect(&server.socket_url(&token));
    let (_, reply) = c.join("room:1", json!({}));
    assert_eq!(
        reply,
        json!({"status": "ok", "response": {"user": {"id": "u9", "name": "Nine"}}})
    );
    assert_eq!(c.join("echo:9", json!({})).1["status"], "ok");
    assert_eq!(
        c.join("collaboration:1", json!({})).1["response"]["reason"],
        "access_denied"
    );
    assert_eq!(
        handshake_status(&server.socket_url(&short)),
        403,
        "--ttl 0 is expired"
    );
    drop(c);
    server.stop();

    // A configured secret wins over the file, for both.
    let config = dir.0.join("shardcast.toml");
    std::fs::write(
        &config,
        format!("[auth]\nsecret = \"{}\"\n", "k".repeat(40)),
    )
    .unwrap();
    let token = mint(&[
        "--sub",
        "u1",
        "--name",
        "One",
        "--config",
        config.to_str().unwrap(),
    ]);
    let server = FeatureServer::start(&dir.0, |c| c.auth.secret = "k".repeat(40));
    assert_eq!(handshake_status(&server.socket_url(&token)), 101);
}

#[test]
fn tokens_of_a_configured_identity_provider_key_are_accepted_at_connect_and_join() {
    let dir = TempDir::new("auth-idp");
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt");
    let server = FeatureServer::start(&dir.0, |c| {
        c.auth.public_keys = vec![shardcast::config::PublicKeyConfig {
            alg: shardcast::config::KeyAlgorithm::ES256,
            kid: Some("idp-1".into()),
            pem: None,
            pem_file: Some(fixtures.join("es256-public.pem")),
        }];
    });
    let key = jsonwebtoken::EncodingKey::from_ec_pem(
        &std::fs::read(fixtures.join("es256-private.pem")).unwrap(),
    )
    .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("idp-1".into());
    let mut claims = Claims::new("idp-user", "Ida", 60);
    claims.rooms = Some(vec!["room:*".into()]);
    let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let base = format!("ws://{}/socket/websocket?vsn=2.0.0", server.addr);
    assert_eq!(handshake_status(&format!("{base}&token={token}")), 101);
    let mut ws = connect(&server.socket_url(&token));
    send_text(&mut ws, r#"["1","1","room:lobby","phx_join",{}]"#);
    let reply = recv_json(&mut ws);
    assert_eq!(reply[4]["status"], "ok", "{reply}");
    assert_eq!(
        reply[4]["response"]["user"],
        json!({"id": "idp-user", "name": "Ida"})
    );
    // Another kid, or the same claims under another algorithm's name, are refused.
    header.kid = Some("idp-2".into());
    let other = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    assert_eq!(handshake_status(&format!("{base}&token={other}")), 403);
}
