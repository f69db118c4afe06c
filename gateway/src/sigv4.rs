//! AWS Signature Version 4, for brokering AWS credentials (Amazon Braket):
//! the agent signs with placeholder keys, the gateway re-signs each request
//! with the real ones it holds. The steps follow AWS's "Create a signed AWS
//! API request" (canonical request, string to sign, derived key), as botocore
//! implements them for non-S3 services; the tests check against botocore.

use hmac::{Hmac, Mac};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

/// The real AWS credential and the scope it signs for.
#[derive(Clone)]
pub struct AwsCredential {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub region: String,
    pub service: String,
}

impl std::fmt::Debug for AwsCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the secret
        f.debug_struct("AwsCredential")
            .field("access_key_id", &self.access_key_id)
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl AwsCredential {
    /// `aws_access_key_id = ...`, `aws_secret_access_key = ...` and optional
    /// `aws_session_token = ...` lines, as in ~/.aws/credentials.
    pub fn parse(text: &str, region: &str, service: &str) -> Result<AwsCredential, String> {
        let mut id = None;
        let mut secret = None;
        let mut token = None;
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().to_string();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
        Ok(AwsCredential {
            access_key_id: id.ok_or("no aws_access_key_id line")?,
            secret_access_key: secret.ok_or("no aws_secret_access_key line")?,
            session_token: token,
            region: region.to_string(),
            service: service.to_string(),
        })
    }

    /// Replace whatever signature `headers` carry with ours for this request.
    pub fn sign(
        &self,
        target: &Target<'_>,
        headers: &mut HeaderMap,
        body: &[u8],
        now: std::time::SystemTime,
    ) {
        let Target {
            method,
            host,
            path,
            query,
        } = *target;
        for h in [
            "authorization",
            "x-amz-date",
            "x-amz-security-token",
            "x-amz-content-sha256",
        ] {
            headers.remove(h);
        }
        let (date, stamp) = timestamps(now);
        set(headers, "host", host);
        set(headers, "x-amz-date", &stamp);
        if let Some(t) = &self.session_token {
            set(headers, "x-amz-security-token", t);
        }
        // sign every header but those proxies and clients rewrite
        let mut names: Vec<String> = headers
            .keys()
            .map(|k| k.as_str().to_string())
            .filter(|k| {
                !matches!(
                    k.as_str(),
                    "user-agent" | "expect" | "x-amzn-trace-id" | "content-length"
                )
            })
            .collect();
        names.sort();
        names.dedup();
        let canonical_headers: String = names
            .iter()
            .map(|n| {
                let values: Vec<String> = headers
                    .get_all(n.as_str())
                    .iter()
                    .map(|v| collapse(&String::from_utf8_lossy(v.as_bytes())))
                    .collect();
                format!("{n}:{}\n", values.join(","))
            })
            .collect();
        let signed = names.join(";");
        let canonical_request = format!(
            "{method}\n{}\n{}\n{canonical_headers}\n{signed}\n{}",
            encode(path, true),
            canonical_query(query.unwrap_or("")),
            hex(&Sha256::digest(body)),
        );
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
            hex(&Sha256::digest(canonical_request.as_bytes()))
        );
        let key = [date.as_str(), &self.region, &self.service, "aws4_request"]
            .iter()
            .fold(
                format!("AWS4{}", self.secret_access_key).into_bytes(),
                |k, part| hmac(&k, part.as_bytes()),
            );
        let signature = hex(&hmac(&key, string_to_sign.as_bytes()));
        let mut auth = HeaderValue::from_str(&format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            self.access_key_id
        ))
        .expect("ASCII");
        auth.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, auth);
    }
}

/// Where a request goes: `path` and `query` as sent on the wire, `host` the
/// upstream's `host[:port]`.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Header values: trimmed, inner runs of spaces collapsed to one.
fn collapse(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// RFC 3986 unreserved characters stay as they are; all else is encoded.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
const PATH: &AsciiSet = &UNRESERVED.remove(b'/');

/// Percent-encoding with upper-case hex. Paths are encoded as sent, so
/// `%3A` becomes `%253A`: AWS encodes non-S3 paths twice.
fn encode(s: &str, path: bool) -> String {
    let out = utf8_percent_encode(s, if path { PATH } else { UNRESERVED }).to_string();
    if path && out.is_empty() {
        return "/".into();
    }
    out
}

/// Query components as sent (`+` is a space in a query).
fn decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(&decode(k), false), encode(&decode(v), false))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `20261122` and `20261122T051500Z` (UTC).
fn timestamps(now: std::time::SystemTime) -> (String, String) {
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil date from days since 1970-01-01 (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let date = format!("{year:04}{month:02}{day:02}");
    let stamp = format!(
        "{date}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    (date, stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_documented_example() {
        // AWS's "Signature Version 4 test suite" get-vanilla case
        let cred = AwsCredential {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            region: "us-east-1".into(),
            service: "service".into(),
        };
        let mut headers = HeaderMap::new();
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160); // 20150830T123600Z
        let target = Target {
            method: "GET",
            host: "example.amazonaws.com",
            path: "/",
            query: None,
        };
        cred.sign(&target, &mut headers, b"", when);
        assert_eq!(headers["x-amz-date"], "20150830T123600Z");
        assert_eq!(
            headers["authorization"],
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn credential_file_and_encoding() {
        let c = AwsCredential::parse(
            "[default]\naws_access_key_id = AKIA1\naws_secret_access_key=s3cr3t\n",
            "us-east-1",
            "braket",
        )
        .unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_deref()),
            ("AKIA1", None)
        );
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(AwsCredential::parse("x = y", "r", "s")
            .unwrap_err()
            .contains("aws_access_key_id"));
        assert_eq!(
            encode("/quantum-task/arn%3Aaws", true),
            "/quantum-task/arn%253Aaws"
        );
        assert_eq!(canonical_query("b=2&a=x%20y&a=1"), "a=1&a=x%20y&b=2");
        assert_eq!(timestamps(std::time::UNIX_EPOCH).1, "19700101T000000Z");
    }
}
