//! Frontends: wire formats only. They parse, call [`crate::service`], and render.

pub mod http;
pub mod internal;
pub mod output_memory;
pub mod resp;
pub mod tls;
