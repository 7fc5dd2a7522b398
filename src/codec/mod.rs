//! Sans-I/O byte codecs: fed `Bytes` chunks, giving chunks or events back. No sockets, no
//! tokio, so each is unit-tested with exact byte fixtures and fuzzed on its own.
//!
//! - [`b64`]: base64 behind one pair of functions, plus a streaming encoder.
//! - [`json_scan`]: the streaming scanner for a Tines upload body (JSON with a base64
//!   field decoded as it streams).
//! - [`multipart`]: the outbound multipart/form-data writer.
//! - [`disposition`]: reading and writing the file name of a `Content-Disposition` header.

pub mod b64;
pub mod disposition;
pub mod json_scan;
pub mod multipart;
