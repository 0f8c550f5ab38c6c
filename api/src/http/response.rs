//! Responses: a status, an optional `Allow`, a JSON body (or none), always `Connection: close`.

use std::fmt::Display;

use serde::Serialize;

use crate::types::ErrorBody;

/// A response, ready to be written with [`Response::to_bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    allow: Option<&'static str>,
    body: Vec<u8>,
}

impl Response {
    /// `status` with `value` as its JSON body (500 if it cannot be serialized).
    pub fn json<T: Serialize>(status: u16, value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response {
                status,
                allow: None,
                body,
            },
            Err(e) => Response::error(500, format_args!("cannot serialize the response: {e}")),
        }
    }

    /// `status` with `{"error": message}`, the message folded onto one line.
    pub fn error(status: u16, message: impl Display) -> Response {
        let error = message
            .to_string()
            .split(['\r', '\n'])
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        Response::json(status, &ErrorBody { error })
    }

    /// `status` with no body.
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            allow: None,
            body: Vec::new(),
        }
    }

    /// 405 Method Not Allowed, with the methods `path` takes in `Allow`.
    pub fn method_not_allowed(path: &str, allow: &'static str) -> Response {
        Response {
            allow: Some(allow),
            ..Response::error(405, format_args!("{path} takes {allow} only"))
        }
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The `Allow` header, on 405 answers.
    pub fn allow(&self) -> Option<&'static str> {
        self.allow
    }

    /// The body (JSON, or empty).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The response as sent: status line, headers, body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        if !self.body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        // 204 must not have a Content-Length; everything else has one, so clients need not
        // wait for the close.
        if self.status != 204 {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        if let Some(allow) = self.allow {
            head.push_str(&format!("Allow: {allow}\r\n"));
        }
        head.push_str("Connection: close\r\n\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// The reason phrase for the statuses the API uses.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_one_line_json() {
        let r = Response::error(409, "the VM is\nalready paused\r\n");
        assert_eq!(r.body(), br#"{"error":"the VM is already paused"}"#);
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.starts_with("HTTP/1.1 409 Conflict\r\n"), "{text}");
        assert!(text.contains("Content-Type: application/json\r\n"));
        assert!(text.contains("Content-Length: 36\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"error\":\"the VM is already paused\"}"));
    }

    #[test]
    fn no_content_has_no_length_and_accepted_has_zero() {
        let text = String::from_utf8(Response::empty(204).to_bytes()).unwrap();
        assert_eq!(text, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        let text = String::from_utf8(Response::empty(202).to_bytes()).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn method_not_allowed_names_the_methods() {
        let r = Response::method_not_allowed("/vm", "GET");
        assert_eq!((r.status(), r.allow()), (405, Some("GET")));
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.contains("\r\nAllow: GET\r\n"), "{text}");
    }
}
