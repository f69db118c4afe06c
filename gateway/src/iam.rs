//! The IBM Cloud IAM exchange for agents that hold a gateway token.
//!
//! Qiskit's SDK trades its API key for a bearer at IAM, then presents the
//! bearer to Runtime. An agent's SDK is given its gateway token as its API
//! key: the gateway answers that exchange itself (the token never reaches
//! IAM) with a bearer that carries the token, which the Runtime route then
//! recognises as the agent's. The SDK reads the bearer's expiry as a JWT
//! without checking its signature: the token travels in the signature part,
//! under a header no IAM token has, so only bearers minted here are opened.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// `{"alg":"HS256","typ":"JWT","kid":"vigil-gateway"}`, base64url.
const HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InZpZ2lsLWdhdGV3YXkifQ";
/// How long a minted bearer is good for (the SDK asks again before then).
pub const LIFETIME_SECS: u64 = 3600;
/// Longest bearer opened: a token is at most a few hundred bytes.
const MAX_BEARER: usize = 4096;

/// The `apikey` field of an IAM token request (a form body); an error for
/// a body read two ways (two keys: which one would IAM take?) or not at all.
pub fn api_key(form: &[u8]) -> Result<Option<String>, &'static str> {
    let form = std::str::from_utf8(form).map_err(|_| "the form is not UTF-8")?;
    let mut keys = form
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| *name == "apikey");
    let Some((_, value)) = keys.next() else {
        return Ok(None);
    };
    if keys.next().is_some() {
        return Err("the form carries more than one apikey");
    }
    let value = value.replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&value)
        .decode_utf8()
        .map_err(|_| "the apikey is not UTF-8")?;
    Ok(Some(decoded.into_owned()))
}

/// Whether a header value carries a bearer minted here: it must never
/// reach a provider (it holds an agent's gateway token).
pub fn is_minted(value: &str) -> bool {
    value
        .match_indices(HEADER)
        .any(|(at, _)| value[at + HEADER.len()..].starts_with('.'))
}

/// A bearer carrying `token`, issued at `now_s` (Unix seconds).
pub fn bearer(token: &str, now_s: u64) -> String {
    let claims = serde_json::json!({
        "iss": "vigil-gateway",
        "iat": now_s,
        "exp": now_s + LIFETIME_SECS,
    });
    format!(
        "{HEADER}.{}.{}",
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(token)
    )
}

/// IAM's answer to the exchange, with a bearer carrying `token`.
pub fn response(token: &str, now_s: u64) -> serde_json::Value {
    serde_json::json!({
        "access_token": bearer(token, now_s),
        "refresh_token": "not_supported",
        "token_type": "Bearer",
        "expires_in": LIFETIME_SECS,
        "expiration": now_s + LIFETIME_SECS,
    })
}

/// The token inside a bearer minted by [`bearer`]; `None` for anything else.
pub fn token_in_bearer(bearer: &str) -> Option<String> {
    if bearer.len() > MAX_BEARER {
        return None;
    }
    let mut parts = bearer.split('.');
    let (header, _claims, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if header != HEADER || parts.next().is_some() {
        return None;
    }
    String::from_utf8(URL_SAFE_NO_PAD.decode(signature).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_constant_is_what_it_says() {
        let header = URL_SAFE_NO_PAD.decode(HEADER).unwrap();
        let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
        assert_eq!(header["kid"], "vigil-gateway");
        assert_eq!(header["typ"], "JWT");
    }

    #[test]
    fn a_minted_bearer_carries_its_token_and_an_expiry() {
        let b = bearer("agent-token-0123456789", 1_700_000_000);
        assert_eq!(
            token_in_bearer(&b).as_deref(),
            Some("agent-token-0123456789")
        );
        let claims = b.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        assert_eq!(claims["exp"], 1_700_000_000u64 + LIFETIME_SECS);
    }

    #[test]
    fn other_bearers_are_not_opened() {
        // an IAM token (another header), a plain token, junk, a huge value
        let iam = format!("eyJhbGciOiJSUzI1NiJ9.e30.{}", URL_SAFE_NO_PAD.encode("x"));
        for b in [
            iam.as_str(),
            "plain-token",
            "a.b",
            "..",
            &"a".repeat(10_000),
        ] {
            assert_eq!(token_in_bearer(b), None, "{b}");
        }
        let forged = format!("{HEADER}.e30.%%%");
        assert_eq!(token_in_bearer(&forged), None);
    }

    #[test]
    fn the_api_key_is_read_from_the_form() {
        let form = b"grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey=k%2By+z";
        assert_eq!(api_key(form), Ok(Some("k+y z".into())));
        assert_eq!(api_key(b"grant_type=x"), Ok(None));
        assert!(api_key(b"apikey=%FF").is_err());
        assert!(api_key(&[0xff, 0xfe]).is_err());
        // which one would IAM take? neither
        assert!(api_key(b"apikey=a&apikey=b").is_err());
        assert!(is_minted(&format!("Bearer {}", bearer("t", 1))));
        assert!(!is_minted("Bearer eyJhbGciOiJSUzI1NiJ9.e30.x"));
    }
}
