//! Request parsing: bytes in, a [`Request`] (or how much more is needed, or why not) out.
//! `httparse` reads the request line and headers; this adds the body framing and the limits.

use super::{MAX_BODY_BYTES, MAX_HEADERS, MAX_HEADER_BYTES};

/// A request method. The API uses `GET` and `PUT`; anything else is kept for the 405 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `PUT`.
    Put,
    /// Any other method token (case-sensitive, as HTTP says).
    Other(String),
}

impl Method {
    fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "PUT" => Method::Put,
            other => Method::Other(other.to_owned()),
        }
    }
}

/// A complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The request target as sent (`/vm`, possibly with a `?query`).
    pub path: String,
    /// Exactly `Content-Length` bytes (empty without one).
    pub body: Vec<u8>,
}

/// What [`parse_request`] found in the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A valid beginning: read more and parse again.
    Incomplete,
    /// A whole request, taking the first `len` bytes; anything after it is not looked at.
    Complete {
        /// The request.
        request: Request,
        /// Header and body bytes used.
        len: usize,
    },
}

/// Why the bytes are not a request the API accepts. Each has the status to answer with;
/// after any of them the server closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// Not HTTP: a bad request line or header (400).
    #[error("malformed request: {0}")]
    Malformed(String),
    /// HTTP/1.0 (or another version): the API speaks HTTP/1.1 only (400).
    #[error("unsupported HTTP version: only HTTP/1.1 is accepted")]
    Version,
    /// The request line and headers do not fit in [`MAX_HEADER_BYTES`] (431).
    #[error("request headers are larger than {MAX_HEADER_BYTES} bytes")]
    HeadersTooLarge,
    /// More than [`MAX_HEADERS`] headers (431).
    #[error("more than {MAX_HEADERS} request headers")]
    TooManyHeaders,
    /// `Content-Length` is not one decimal number, or two of them disagree (400).
    #[error("invalid Content-Length")]
    BadContentLength,
    /// The body is larger than [`MAX_BODY_BYTES`] (413); seen from `Content-Length` alone.
    #[error("request body of {0} bytes is larger than the limit of {MAX_BODY_BYTES} bytes")]
    BodyTooLarge(u64),
    /// `Transfer-Encoding` (chunked bodies) is not supported (411 Length Required).
    #[error("Transfer-Encoding is not supported: send the body with Content-Length")]
    TransferEncoding,
}

impl HttpError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed(_) | HttpError::Version | HttpError::BadContentLength => 400,
            HttpError::HeadersTooLarge | HttpError::TooManyHeaders => 431,
            HttpError::BodyTooLarge(_) => 413,
            HttpError::TransferEncoding => 411,
        }
    }
}

/// Parses the bytes a connection has received so far.
///
/// Pure and incremental: call it again with more bytes after [`Parsed::Incomplete`]. The
/// result never depends on how the bytes were split into reads, and it fails as soon as a
/// limit is certain to be crossed (headers over [`MAX_HEADER_BYTES`] before their end
/// arrives, a `Content-Length` over [`MAX_BODY_BYTES`] before the body arrives), so a caller
/// that stops reading on an error never holds more than the limits plus one read.
pub fn parse_request(buf: &[u8]) -> Result<Parsed, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let header_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEADER_BYTES => {
            return Err(HttpError::HeadersTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Incomplete),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    if header_len > MAX_HEADER_BYTES {
        return Err(HttpError::HeadersTooLarge);
    }
    if req.version != Some(1) {
        return Err(HttpError::Version);
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        // httparse fills both in a complete parse; be safe anyway.
        return Err(HttpError::Malformed("no request line".into()));
    };
    let body_len = body_length(req.headers)?;
    let body_len = usize::try_from(body_len)
        .ok()
        .filter(|&n| n <= MAX_BODY_BYTES)
        .ok_or(HttpError::BodyTooLarge(body_len))?;
    // At most MAX_HEADER_BYTES + MAX_BODY_BYTES: no overflow.
    let len = header_len + body_len;
    let Some(body) = buf.get(header_len..len) else {
        return Ok(Parsed::Incomplete);
    };
    Ok(Parsed::Complete {
        request: Request {
            method: Method::from_token(method),
            path: path.to_owned(),
            body: body.to_vec(),
        },
        len,
    })
}

/// The body length the headers announce: 0 without `Content-Length`.
fn body_length(headers: &[httparse::Header<'_>]) -> Result<u64, HttpError> {
    let mut length = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::TransferEncoding);
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value)?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::BadContentLength);
            }
            length = Some(n);
        }
    }
    Ok(length.unwrap_or(0))
}

/// One `Content-Length` value: decimal digits only (no sign, no list). A number too large
/// for a u64 is certainly too large a body.
fn content_length(value: &[u8]) -> Result<u64, HttpError> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::BadContentLength);
    }
    Ok(digits
        .iter()
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (Request, usize) {
        match parse_request(buf) {
            Ok(Parsed::Complete { request, len }) => (request, len),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn error(buf: &[u8]) -> HttpError {
        match parse_request(buf) {
            Err(e) => e,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn get_without_body() {
        let raw = b"GET /vm HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let (req, len) = complete(raw);
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.path, "/vm");
        assert!(req.body.is_empty());
        assert_eq!(len, raw.len());
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let raw = b"PUT /vm/pause HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
        for cut in 0..raw.len() {
            assert_eq!(
                parse_request(&raw[..cut]),
                Ok(Parsed::Incomplete),
                "cut {cut}"
            );
        }
        let (req, len) = complete(raw);
        assert_eq!((req.body.as_slice(), len), (&b"{}"[..], raw.len()));
    }

    #[test]
    fn pipelined_bytes_after_the_body_are_left_alone() {
        let first = b"PUT /vm/stop HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        let mut raw = first.to_vec();
        raw.extend_from_slice(b"GET /vm HTTP/1.1\r\n\r\n");
        let (req, len) = complete(&raw);
        assert_eq!(req.body, b"abc");
        assert_eq!(len, first.len());
        // Without Content-Length the next request is not a body.
        let (req, len) = complete(b"GET /vm HTTP/1.1\r\n\r\nGARBAGE");
        assert!(req.body.is_empty());
        assert_eq!(len, 20);
    }

    #[test]
    fn methods_are_case_sensitive_tokens() {
        assert_eq!(complete(b"PUT / HTTP/1.1\r\n\r\n").0.method, Method::Put);
        assert_eq!(
            complete(b"get / HTTP/1.1\r\n\r\n").0.method,
            Method::Other("get".into())
        );
        assert_eq!(
            complete(b"DELETE /vm HTTP/1.1\r\n\r\n").0.method,
            Method::Other("DELETE".into())
        );
        assert!(matches!(
            error(b"G(T / HTTP/1.1\r\n\r\n"),
            HttpError::Malformed(_)
        ));
    }

    #[test]
    fn only_http_1_1() {
        assert_eq!(error(b"GET /vm HTTP/1.0\r\n\r\n"), HttpError::Version);
        assert_eq!(error(b"GET /vm HTTP/1.0\r\n\r\n").status(), 400);
        assert!(matches!(
            error(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            HttpError::Malformed(_)
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        for raw in [
            &b"\x00\x01\x02\x03"[..],
            b"GET\r\n\r\n",
            b"GET /vm HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET /v m HTTP/1.1\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
        ] {
            let e = error(raw);
            assert!(matches!(e, HttpError::Malformed(_)), "{raw:?}: {e:?}");
            assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn bad_utf8_in_the_path_is_rejected_and_in_a_header_value_is_ignored() {
        assert!(matches!(
            error(b"GET /vm\xc3\x28 HTTP/1.1\r\n\r\n"),
            HttpError::Malformed(_)
        ));
        let (req, _) = complete(b"GET /vm HTTP/1.1\r\nX-Junk: \xc3\x28\xff\r\n\r\n");
        assert_eq!(req.path, "/vm");
    }

    #[test]
    fn headers_over_the_limit_fail_before_they_end() {
        let mut raw = b"GET /vm HTTP/1.1\r\nX-Big: ".to_vec();
        raw.resize(MAX_HEADER_BYTES - 1, b'a');
        assert_eq!(parse_request(&raw), Ok(Parsed::Incomplete));
        raw.push(b'a');
        assert_eq!(error(&raw), HttpError::HeadersTooLarge);
        assert_eq!(HttpError::HeadersTooLarge.status(), 431);
        // The same headers arriving whole in one read fail the same way.
        raw.extend_from_slice(b"\r\n\r\n");
        assert_eq!(error(&raw), HttpError::HeadersTooLarge);
        // A header section of exactly the limit is fine.
        let mut raw = b"GET /vm HTTP/1.1\r\nX-Big: ".to_vec();
        raw.resize(MAX_HEADER_BYTES - 4, b'a');
        raw.extend_from_slice(b"\r\n\r\n");
        assert_eq!(complete(&raw).1, MAX_HEADER_BYTES);
    }

    #[test]
    fn too_many_headers() {
        let mut raw = b"GET /vm HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert_eq!(error(&raw), HttpError::TooManyHeaders);
        assert_eq!(HttpError::TooManyHeaders.status(), 431);
    }

    #[test]
    fn huge_content_length_fails_before_the_body() {
        let e = error(b"PUT /vm/stop HTTP/1.1\r\nContent-Length: 1000000000\r\n\r\n");
        assert_eq!(e, HttpError::BodyTooLarge(1_000_000_000));
        assert_eq!(e.status(), 413);
        let e = error(b"PUT /vm/stop HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n");
        assert_eq!(e, HttpError::BodyTooLarge(u64::MAX));
        let limit = format!("PUT /vm/stop HTTP/1.1\r\nContent-Length: {MAX_BODY_BYTES}\r\n\r\n");
        assert_eq!(parse_request(limit.as_bytes()), Ok(Parsed::Incomplete));
        let over = format!(
            "PUT /vm/stop HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        assert!(matches!(error(over.as_bytes()), HttpError::BodyTooLarge(_)));
    }

    #[test]
    fn invalid_content_lengths() {
        for value in ["", "-1", "+1", "1.0", "0x10", "1, 1", "one", "1 2"] {
            let raw = format!("PUT /vm/stop HTTP/1.1\r\nContent-Length: {value}\r\n\r\n");
            assert_eq!(
                error(raw.as_bytes()),
                HttpError::BadContentLength,
                "{value:?}"
            );
        }
        let raw = b"PUT /vm/stop HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 2\r\n\r\nab";
        assert_eq!(error(raw), HttpError::BadContentLength);
        // Repeating the same length is harmless; case and spaces do not matter.
        let raw = b"PUT /vm/stop HTTP/1.1\r\nContent-Length: 2\r\nCONTENT-LENGTH:  2 \r\n\r\nab";
        assert_eq!(complete(raw).0.body, b"ab");
        assert_eq!(
            complete(b"PUT / HTTP/1.1\r\nContent-Length: 000\r\n\r\n").1,
            39
        );
    }

    #[test]
    fn transfer_encoding_is_refused() {
        for te in ["chunked", "gzip, chunked", "identity"] {
            let raw = format!("PUT /vm/stop HTTP/1.1\r\nTransfer-Encoding: {te}\r\n\r\n0\r\n\r\n");
            assert_eq!(error(raw.as_bytes()), HttpError::TransferEncoding);
        }
        // Also alongside a Content-Length (request smuggling's favourite).
        let raw =
            b"PUT /vm/stop HTTP/1.1\r\nContent-Length: 3\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(error(raw), HttpError::TransferEncoding);
        assert_eq!(HttpError::TransferEncoding.status(), 411);
    }

    #[test]
    fn leading_blank_lines_are_skipped() {
        let (req, _) = complete(b"\r\n\r\nGET /vm HTTP/1.1\r\n\r\n");
        assert_eq!(req.path, "/vm");
    }
}
