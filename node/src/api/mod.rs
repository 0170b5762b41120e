//! Frontends: wire formats only. They parse, call [`crate::service`], and render.

pub mod client_memory;
pub mod http;
pub mod internal;
pub mod resp;
pub mod tls;
