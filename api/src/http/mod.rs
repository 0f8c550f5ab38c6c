//! The HTTP side of the API, pure: [`parse_request`] turns received bytes into a
//! [`Request`], [`handle`] routes it to [`crate::VmOps`] and builds the [`Response`]. The
//! server only moves bytes between these and the socket, so both are tested (and fuzzed)
//! without one.
//!
//! One request per connection: every response says `Connection: close` and the server
//! closes after it; bytes after the first request are never read.

mod parse;
mod response;
mod routes;

pub use parse::{parse_request, HttpError, Method, Parsed, Request};
pub use response::Response;
pub use routes::handle;

/// Largest request line plus headers, in bytes (431 beyond).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest request body, in bytes (413 beyond).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most request headers (431 beyond).
pub const MAX_HEADERS: usize = 32;
