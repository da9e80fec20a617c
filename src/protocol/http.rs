//! The HTTP/1.1 request head that opens every connection: WebSocket upgrade validation (RFC 6455
//! §4.2) and the plain responses the server gives on the same port. No I/O here.

use std::collections::HashMap;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The request method, e.g. `GET`.
    pub method: String,
    /// The request target before any `?`, not decoded.
    pub path: String,
    /// Query parameters, percent-decoded, in order (repeats kept).
    pub query: Vec<(String, String)>,
    /// Header names lower-cased.
    pub headers: HashMap<String, String>,
    /// Bytes the head occupied (anything after it is the client's first frames).
    pub head_len: usize,
}

/// Why a request head could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not a valid HTTP/1.x request head (the parser's message).
    #[error("malformed HTTP request: {0}")]
    Malformed(String),
    /// The head is longer than the limit of this many bytes.
    #[error("HTTP request head larger than {0} bytes")]
    TooLarge(usize),
}

/// Parses a request head from the start of `buf`. `Ok(None)` means more bytes are needed.
pub fn parse_request_head(buf: &[u8], max_len: usize) -> Result<Option<RequestHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    let status = req
        .parse(buf)
        .map_err(|e| HeadError::Malformed(e.to_string()))?;
    let head_len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial if buf.len() >= max_len => {
            return Err(HeadError::TooLarge(max_len))
        }
        httparse::Status::Partial => return Ok(None),
    };
    if head_len > max_len {
        return Err(HeadError::TooLarge(max_len));
    }
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, parse_query(q)),
        None => (target, Vec::new()),
    };
    let mut map = HashMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value).into_owned();
        map.entry(h.name.to_ascii_lowercase())
            .and_modify(|v: &mut String| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    Ok(Some(RequestHead {
        method: req.method.unwrap_or("").to_owned(),
        path: path.to_owned(),
        query,
        headers: map,
        head_len,
    }))
}

/// Splits `a=1&b=x%20y` into decoded pairs (`+` is a space, as in form encoding).
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+`; invalid escapes are kept literally, invalid UTF-8 is replaced.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// What to do with a request that asked for a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeCheck {
    /// Valid: answer 101 with this `Sec-WebSocket-Accept`.
    Accept(String),
    /// Not a WebSocket request at all.
    NotUpgrade,
    /// A WebSocket request we must refuse, with status and reason.
    Refuse(u16, &'static str),
}

fn header_has_token(headers: &HashMap<String, String>, name: &str, token: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Validates the upgrade headers of RFC 6455 §4.2.1.
pub fn check_upgrade(head: &RequestHead) -> UpgradeCheck {
    if !header_has_token(&head.headers, "upgrade", "websocket") {
        return UpgradeCheck::NotUpgrade;
    }
    if head.method != "GET" {
        return UpgradeCheck::Refuse(405, "WebSocket upgrade requires GET");
    }
    if !header_has_token(&head.headers, "connection", "upgrade") {
        return UpgradeCheck::Refuse(400, "missing Connection: Upgrade");
    }
    if head.headers.get("sec-websocket-version").map(|v| v.trim()) != Some("13") {
        return UpgradeCheck::Refuse(426, "unsupported Sec-WebSocket-Version (13 required)");
    }
    match head.headers.get("sec-websocket-key").map(|k| k.trim()) {
        Some(key) if is_websocket_key(key) => {
            UpgradeCheck::Accept(tungstenite::handshake::derive_accept_key(key.as_bytes()))
        }
        Some(_) => UpgradeCheck::Refuse(400, "Sec-WebSocket-Key must be base64 of 16 bytes"),
        None => UpgradeCheck::Refuse(400, "missing Sec-WebSocket-Key"),
    }
}

/// The 101 response completing a WebSocket upgrade, with the extensions agreed (the value of
/// `Sec-WebSocket-Extensions`), if any.
pub fn switching_protocols(accept: &str, extensions: Option<&str>) -> Vec<u8> {
    let extensions = extensions
        .map(|e| format!("sec-websocket-extensions: {e}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n{extensions}\r\n"
    )
    .into_bytes()
}

/// A complete response with a body; the server closes the connection after it.
pub fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let extra = if status == 426 {
        "sec-websocket-version: 13\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// RFC 6455 §4.2.1: the key is the base64 encoding of 16 bytes — 24 characters, the last two
/// `==`, and the 22nd one of `AQgw` (the last 4 bits of the 16th byte are padding and zero).
fn is_websocket_key(key: &str) -> bool {
    let b = key.as_bytes();
    let b64 = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
    b.len() == 24
        && b[22..] == *b"=="
        && b[..21].iter().all(|&c| b64(c))
        && matches!(b[21], b'A' | b'Q' | b'g' | b'w')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_keys_must_be_base64_of_16_bytes() {
        assert!(is_websocket_key("dGhlIHNhbXBsZSBub25jZQ=="));
        for bad in [
            "",
            "abc",
            "dGhlIHNhbXBsZSBub25jZQ",           // no padding
            "dGhlIHNhbXBsZSBub25jZR==",         // non-zero padding bits
            "dGhlIHNhbXBsZSBub25j*Q==",         // not base64
            "dGhlIHNhbXBsZSBub25jZSBub25jZQ==", // 22 bytes
        ] {
            assert!(!is_websocket_key(bad), "{bad}");
        }
        assert!(!is_websocket_key(&"A".repeat(2000)));
        let bad = UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "abc");
        let head = parse_request_head(bad.as_bytes(), 8192).unwrap().unwrap();
        assert!(matches!(check_upgrade(&head), UpgradeCheck::Refuse(400, _)));
    }

    const UPGRADE: &str = "GET /socket/websocket?vsn=2.0.0&token=a%2Bb&x=1+2 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn parses_upgrade_with_query() {
        let head = parse_request_head(UPGRADE.as_bytes(), 8192)
            .unwrap()
            .unwrap();
        assert_eq!(head.path, "/socket/websocket");
        assert_eq!(
            head.query,
            vec![
                ("vsn".into(), "2.0.0".into()),
                ("token".into(), "a+b".into()),
                ("x".into(), "1 2".into())
            ]
        );
        assert_eq!(head.head_len, UPGRADE.len());
        // The RFC 6455 example key.
        assert_eq!(
            check_upgrade(&head),
            UpgradeCheck::Accept("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into())
        );
    }

    #[test]
    fn partial_and_oversized_heads() {
        assert_eq!(
            parse_request_head(&UPGRADE.as_bytes()[..40], 8192).unwrap(),
            None
        );
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000));
        assert_eq!(
            parse_request_head(huge.as_bytes(), 8192),
            Err(HeadError::TooLarge(8192))
        );
        assert!(matches!(
            parse_request_head(b"\x00\x01garbage\r\n\r\n", 8192),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn refuses_bad_upgrades() {
        let v12 = UPGRADE.replace("Version: 13", "Version: 12");
        let head = parse_request_head(v12.as_bytes(), 8192).unwrap().unwrap();
        assert!(matches!(check_upgrade(&head), UpgradeCheck::Refuse(426, _)));
        let plain = parse_request_head(b"GET /health HTTP/1.1\r\n\r\n", 8192)
            .unwrap()
            .unwrap();
        assert_eq!(check_upgrade(&plain), UpgradeCheck::NotUpgrade);
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("%41%zz%"), "A%zz%");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
        assert_eq!(percent_decode("a%4"), "a%4");
    }
}
