//! Write FireScroll plugins in Rust.
//!
//! A plugin is a WebAssembly module with no imports that FireScroll runs at apply time (as a
//! write's `if_plugin` condition or `transform`) or at read time (a get's or list's
//! `transform`). This crate hides the ABI: write a function over typed [`Input`] and export it
//! with [`condition!`] or [`transform!`]. Build with
//! `cargo build --release --target wasm32-unknown-unknown` as a `cdylib`, and upload the `.wasm`:
//! `curl -X PUT --data-binary @plugin.wasm localhost:8190/plugins/<name>`.
//!
//! Plugins must be deterministic — every replica runs them on the same input and must reach the
//! same outcome — and they are: there is no clock, randomness or I/O to reach. They run under a
//! fuel limit; a panic traps. Both reject the write, with the reason in its outcome.
//!
//! # Example: a condition and a transform
//!
//! ```ignore
//! #![no_std]
//! extern crate alloc;
//! use firescroll_plugin_sdk::{condition, transform, Input, Reject, serde_json::Value};
//!
//! /// Only writes that keep `owner` unchanged.
//! fn same_owner(input: Input) -> Result<bool, Reject> {
//!     let old = input.current.as_ref().map(|c| &c.data["owner"]);
//!     Ok(old.is_none() || old == Some(&input.data["owner"]))
//! }
//! condition!(same_owner);
//!
//! /// Stores the data with a `size` field added.
//! fn add_size(input: Input) -> Result<Value, Reject> {
//!     let mut data = input.data;
//!     let size = data.as_object().map_or(0, |o| o.len());
//!     data["size"] = size.into();
//!     Ok(data)
//! }
//! transform!(add_size);
//! ```
//!
//! Input is `{op, pk, sk, data, current: {data, _created_at, _updated_at} | null, args}`:
//! `op` is `put`, `delete` or `read`; `args` is the write's (or read's) `args`, `null` if none.
#![no_std]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use serde::Deserialize;

pub use serde;
pub use serde_json;

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[cfg(all(target_arch = "wasm32", feature = "panic-handler"))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// What a plugin is called with. `D` is the type of `data`, `A` of `args`: any
/// `Deserialize` type; [`serde_json::Value`] by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(bound(deserialize = "D: Deserialize<'de> + Default, A: Deserialize<'de> + Default"))]
pub struct Input<D = serde_json::Value, A = serde_json::Value> {
    /// `put`, `delete`, or `read` (a read-time transform).
    pub op: String,
    pub pk: String,
    pub sk: String,
    /// The write's new data (`put`), or the stored data (`read`); default when `null`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub data: D,
    /// The record as stored before this write; `None` if there is none.
    pub current: Option<Current<D>>,
    /// The `args` given with the write or read; default when `null`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub args: A,
}

/// A stored record.
#[derive(Debug, Clone, Deserialize)]
#[serde(bound(deserialize = "D: Deserialize<'de> + Default"))]
pub struct Current<D = serde_json::Value> {
    #[serde(default, deserialize_with = "null_as_default")]
    pub data: D,
    /// Unix milliseconds of the write that created the record.
    #[serde(rename = "_created_at")]
    pub created_at: i64,
    /// Unix milliseconds of the write that last changed it.
    #[serde(rename = "_updated_at")]
    pub updated_at: i64,
}

fn null_as_default<'de, T: Deserialize<'de> + Default, De: serde::Deserializer<'de>>(
    d: De,
) -> Result<T, De::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A plugin's refusal to answer: rejects the write (the code shows in its outcome). Use
/// `Ok(false)` for an ordinary "condition not met".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject(pub i32);

impl Reject {
    /// The input did not parse as this plugin's types.
    pub const BAD_INPUT: Reject = Reject(-2);
    /// The output did not serialize.
    pub const BAD_OUTPUT: Reject = Reject(-3);
}

/// The ABI the macros expand to. Not for direct use.
#[doc(hidden)]
pub mod abi {
    use super::*;

    /// `alloc(len) -> ptr`: the host writes the input here.
    #[unsafe(no_mangle)]
    pub extern "C" fn alloc(len: i32) -> i32 {
        let mut buf: Vec<u8> = Vec::with_capacity(len.max(0) as usize);
        let ptr = buf.as_mut_ptr();
        core::mem::forget(buf);
        ptr as i32
    }

    /// `dealloc(ptr, len)`: frees what `alloc` gave.
    #[unsafe(no_mangle)]
    pub extern "C" fn dealloc(ptr: i32, len: i32) {
        // SAFETY: `ptr` came from `alloc(len)` above, which leaked a Vec of that capacity.
        unsafe { drop(Vec::from_raw_parts(ptr as *mut u8, 0, len.max(0) as usize)) }
    }

    /// The input bytes the host wrote at `ptr`.
    ///
    /// # Safety
    /// `ptr`/`len` must be what the host passed to the export.
    pub unsafe fn input<'a>(ptr: i32, len: i32) -> &'a [u8] {
        // SAFETY: the host wrote `len` bytes at `ptr`, into memory `alloc` reserved.
        unsafe { core::slice::from_raw_parts(ptr as *const u8, len.max(0) as usize) }
    }

    /// Runs a condition on raw input.
    pub fn condition<T: serde::de::DeserializeOwned>(
        input: &[u8],
        f: impl FnOnce(T) -> Result<bool, Reject>,
    ) -> i32 {
        match serde_json::from_slice(input) {
            Err(_) => Reject::BAD_INPUT.0.min(-1),
            Ok(input) => match f(input) {
                Ok(true) => 1,
                Ok(false) => 0,
                Err(Reject(code)) => code.min(-1),
            },
        }
    }

    /// Runs a transform on raw input; leaks the output for the host to read.
    pub fn transform<T: serde::de::DeserializeOwned, O: serde::Serialize>(
        input: &[u8],
        f: impl FnOnce(T) -> Result<O, Reject>,
    ) -> i64 {
        let output = match serde_json::from_slice(input) {
            Err(_) => return i64::from(Reject::BAD_INPUT.0),
            Ok(input) => match f(input) {
                Ok(output) => output,
                Err(Reject(code)) => return i64::from(code.min(-1)),
            },
        };
        let Ok(bytes) = serde_json::to_vec(&output) else {
            return i64::from(Reject::BAD_OUTPUT.0);
        };
        let (ptr, len) = (bytes.as_ptr() as u32 as i64, bytes.len() as u32 as i64);
        core::mem::forget(bytes);
        (ptr << 32) | len
    }
}

/// Exports `f: fn(Input<D, A>) -> Result<bool, Reject>` as the plugin's `condition`.
#[macro_export]
macro_rules! condition {
    ($f:path) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn condition(ptr: i32, len: i32) -> i32 {
            // SAFETY: the host calls this export with the input it wrote.
            let input = unsafe { $crate::abi::input(ptr, len) };
            $crate::abi::condition(input, $f)
        }
    };
}

/// Exports `f: fn(Input<D, A>) -> Result<impl Serialize, Reject>` as the plugin's `transform`:
/// its output becomes the record's data (write) or the returned data (read).
#[macro_export]
macro_rules! transform {
    ($f:path) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn transform(ptr: i32, len: i32) -> i64 {
            // SAFETY: the host calls this export with the input it wrote.
            let input = unsafe { $crate::abi::input(ptr, len) };
            $crate::abi::transform(input, $f)
        }
    };
}

#[cfg(test)]
extern crate std;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const INPUT: &[u8] = br#"{"op":"put","pk":"a","sk":"b","data":{"n":2},"current":{"data":{"n":1},"_created_at":5,"_updated_at":6},"args":null}"#;

    #[test]
    fn typed_input_parses_with_defaults() {
        #[derive(Debug, Default, Deserialize, PartialEq)]
        struct Data {
            n: u32,
        }
        let input: Input<Data> = serde_json::from_slice(INPUT).unwrap();
        assert_eq!(input.data, Data { n: 2 });
        let current = input.current.unwrap();
        assert_eq!(
            (current.data.n, current.created_at, current.updated_at),
            (1, 5, 6)
        );
        assert_eq!(input.args, Value::Null);
        let deleted: Input<Data> = serde_json::from_slice(
            br#"{"op":"delete","pk":"a","sk":"","data":null,"current":null,"args":null}"#,
        )
        .unwrap();
        assert_eq!(deleted.data, Data::default());
    }

    #[test]
    fn conditions_map_to_the_abi_codes() {
        let verdict = |f: fn(Input) -> Result<bool, Reject>| abi::condition(INPUT, f);
        assert_eq!(verdict(|i| Ok(i.data["n"] == 2)), 1);
        assert_eq!(verdict(|_| Ok(false)), 0);
        assert_eq!(verdict(|_| Err(Reject(-9))), -9);
        assert_eq!(
            verdict(|_| Err(Reject(4))),
            -1,
            "errors are always negative"
        );
        assert_eq!(abi::condition(b"not json", |_: Input| Ok(true)), -2);
    }

    #[test]
    fn transforms_return_packed_json() {
        let packed = abi::transform(INPUT, |i: Input| {
            Ok(json!({"doubled": i.data["n"].as_u64().unwrap() * 2}))
        });
        // On a 64-bit host the pointer half is truncated; the length half is exact.
        let len = (packed & 0xffff_ffff) as usize;
        assert_eq!(len, br#"{"doubled":4}"#.len());
        assert_eq!(
            abi::transform(INPUT, |_: Input| Err::<Value, _>(Reject(-7))),
            -7
        );
        assert_eq!(abi::transform(b"[", |_: Input| Ok(json!(1))), -2);
    }
}
