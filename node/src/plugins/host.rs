//! The wasmtime host: compiles and validates plugins, and runs them deterministically — fuel
//! (never wall-clock) limits, NaN canonicalization, no threads or relaxed SIMD, a memory cap
//! and a stack limit — with a fresh instance per call (calls share a store eight at a time, never
//! an instance), so no call can see another's state.

use super::{Digest, PluginError, PluginFailure, PluginKind};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder, Trap, TypedFunc,
};

/// Limits every plugin runs under. The same on every node of a namespace, or replicas could
/// disagree about an out-of-fuel plugin.
#[derive(Debug, Clone)]
pub struct PluginLimits {
    /// Fuel (roughly, wasm instructions) one call may burn.
    pub fuel: u64,
    /// Linear memory one instance may grow to.
    pub memory_bytes: usize,
    /// Size of an uploaded module.
    pub max_module_bytes: usize,
    /// Size of a transform's output.
    pub max_output_bytes: usize,
    /// Instances alive at once (the pooling allocator's slots); more calls at once wait.
    pub max_instances: u32,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            fuel: 50_000_000,
            memory_bytes: 64 << 20,
            max_module_bytes: 4 << 20,
            max_output_bytes: 512 << 10,
            max_instances: 32,
        }
    }
}

/// Per-call store data.
pub struct CallState {
    limits: StoreLimits,
}

/// A compiled, validated plugin, ready to instantiate.
pub struct Compiled {
    pub digest: Digest,
    pub kind: PluginKind,
    pub size: usize,
    pre: InstancePre<CallState>,
}

/// The host: one wasmtime engine and the compiled modules by digest.
pub struct PluginHost {
    engine: Engine,
    limits: PluginLimits,
    compiled: RwLock<HashMap<Digest, Arc<Compiled>>>,
    /// A lock per module being compiled, so that a second caller for the same module finds it
    /// compiled instead of compiling it again: at start the node compiles its plugins in the
    /// background while the appliers may already need them, and two compiles of one module
    /// competing for a busy machine's cores delay the entries that wait for it. Per module, so
    /// that an upload being compiled never holds up an applier that needs another one.
    compiling: Mutex<HashMap<Digest, Arc<Mutex<()>>>>,
    /// Free instance slots. A call waits for one rather than fail: running out of slots is this
    /// node's condition, and must never become a (replica-specific) rejection.
    slots: Mutex<Slots>,
    freed: Condvar,
    /// Stores with room for more instances, waiting for the next call (see [`CALLS_PER_STORE`]).
    idle: Mutex<Vec<CallStore>>,
    metrics: PluginMetrics,
}

/// Calls (each a fresh instance) made in one wasmtime store before it is dropped. Creating and
/// dropping a store, and registering the module with it, was ~1.1 µs of a ~7.4 µs call
/// (`--bench plugins`); eight calls share that. Instances in one store share nothing (plugins
/// import nothing: no memory, table or global is shared), so each call still starts from the
/// module's initial state; the store only outlives it.
const CALLS_PER_STORE: u32 = 8;

/// Instance slots: how many are free, and how many callers wait for one (only then is `freed`
/// signalled: a signal is a system call, paid on every call otherwise).
struct Slots {
    free: u32,
    waiting: u32,
}

/// A store and the instance slots its instances hold (given back when it is dropped).
struct CallStore {
    store: Store<CallState>,
    instances: u32,
}

/// `firescroll_plugin_calls_total{kind,result}` and `firescroll_plugin_call_micro{kind}`.
pub struct PluginMetrics {
    pub calls: prometheus::IntCounterVec,
    pub latency: prometheus::HistogramVec,
}

impl PluginMetrics {
    fn new() -> Self {
        PluginMetrics {
            calls: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "firescroll_plugin_calls_total",
                    "Plugin calls by kind (condition, transform) and result (true, false, ok, out_of_fuel, trap, error_code, invalid_output, abi).",
                ),
                &["kind", "result"],
            )
            .expect("valid metric"),
            latency: prometheus::HistogramVec::new(
                prometheus::HistogramOpts::new(
                    "firescroll_plugin_call_micro",
                    "One plugin call, instantiation included, in microseconds.",
                )
                .buckets(vec![
                    5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0, 20000.0, 100000.0,
                ]),
                &["kind"],
            )
            .expect("valid metric"),
        }
    }

    fn observe(&self, kind: &str, result: &str, started: std::time::Instant) {
        self.calls.with_label_values(&[kind, result]).inc();
        self.latency
            .with_label_values(&[kind])
            .observe(crate::metrics::micros(started.elapsed()));
    }
}

/// Bytes at the start of each instance slot's memory kept mapped between calls and reset in
/// place (the rest is given back with madvise), when the kernel can say which pages a call
/// dirtied (`PAGEMAP_SCAN`, Linux 6.7+): only those are reset. Rust plugins put a 1 MiB stack
/// below their data, so what a call touches lies just below and above 1 MiB; 2 MiB covers it.
/// At most `max_instances` slots x this stays resident. Measured with `--bench plugins` (a
/// fresh instance per call): 43 µs with nothing kept, 28 µs with 128 KiB memset, 12 µs with
/// 2 MiB and the scan (8 µs once memory protections stay put, see `PluginHost::new`).
const KEEP_RESIDENT_SCANNED: usize = 2 << 20;
/// Without `PAGEMAP_SCAN` the kept region is memset whole on every reset: 1 MiB took 51 µs,
/// 128 KiB 28 µs.
const KEEP_RESIDENT_MEMSET: usize = 128 << 10;

impl PluginHost {
    pub fn new(limits: PluginLimits) -> Result<Self, PluginError> {
        let mut config = Config::new();
        // Threads are off by construction: wasmtime is built without its `threads` feature.
        config
            .consume_fuel(true)
            .cranelift_nan_canonicalization(true)
            .wasm_relaxed_simd(false)
            .max_wasm_stack(512 << 10)
            // Reserve only what a memory may use (explicit bounds checks instead of 4 GiB of
            // address space per slot): many nodes' engines fit in one process, as in tests.
            .memory_reservation(limits.memory_bytes as u64)
            // Bounds are checked explicitly, never by a fault in a guard region: a slot's
            // memory protections then stay as they are between calls (with guard pages, every
            // call paid an mprotect to shrink memory back to its initial size and another to
            // grow it). Wasmtime turns the Spectre bounds-check hardening off with it; a plugin
            // has no imports, clock, threads or shared memory, so it has no timer to read a
            // speculative side channel with.
            .memory_guard_size(0)
            .signals_based_traps(false);
        let keep_resident = if PoolingAllocationConfig::is_pagemap_scan_available() {
            KEEP_RESIDENT_SCANNED
        } else {
            KEEP_RESIDENT_MEMSET
        };
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(limits.max_instances)
            .total_memories(limits.max_instances)
            .total_tables(limits.max_instances)
            .max_memory_size(limits.memory_bytes)
            // Every call is a fresh instance in a reused slot: reset what a call touched in
            // place and keep it mapped, instead of giving it back to the kernel (madvise) and
            // faulting it in again on the next call (both were most of a call).
            .linear_memory_keep_resident(keep_resident)
            .table_keep_resident(KEEP_RESIDENT_MEMSET)
            .pagemap_scan(wasmtime::Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| PluginError::Host(e.to_string()))?;
        Ok(PluginHost {
            engine,
            compiled: RwLock::new(HashMap::new()),
            compiling: Mutex::new(HashMap::new()),
            slots: Mutex::new(Slots {
                free: limits.max_instances,
                waiting: 0,
            }),
            freed: Condvar::new(),
            idle: Mutex::new(Vec::new()),
            metrics: PluginMetrics::new(),
            limits,
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    /// Compiles and validates `bytes`: under the size limit, no imports (plugins are pure),
    /// `memory`, `alloc` and `dealloc` exported with the ABI's types, and `condition` and/or
    /// `transform`. Cached by digest: loading the same bytes again is free.
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<Compiled>, PluginError> {
        let digest = Digest::of(bytes);
        if let Some(compiled) = self.get(&digest) {
            return Ok(compiled);
        }
        if bytes.len() > self.limits.max_module_bytes {
            return Err(PluginError::Invalid(format!(
                "the module is {} bytes; the limit is {} (PLUGIN_MAX_BYTES)",
                bytes.len(),
                self.limits.max_module_bytes
            )));
        }
        let gate = self
            .compiling
            .lock()
            .expect("plugin compile lock")
            .entry(digest)
            .or_default()
            .clone();
        let compiled = {
            // Guards nothing but the compile itself: a caller that panicked while compiling
            // leaves no state behind, so the others go on.
            let _held = gate
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match self.get(&digest) {
                Some(compiled) => Ok(compiled),
                None => self.compile(bytes, digest),
            }
        };
        let mut compiling = self.compiling.lock().expect("plugin compile lock");
        // The map's clone and ours: nobody else waits for this module (clones are made under
        // this lock only).
        if Arc::strong_count(&gate) == 2 {
            compiling.remove(&digest);
        }
        compiled
    }

    /// Modules with a compile lock in place (each entry is dropped by the last caller done
    /// with it).
    #[cfg(test)]
    pub(crate) fn compile_locks(&self) -> usize {
        self.compiling.lock().expect("plugin compile lock").len()
    }

    /// Compiles and checks `bytes` (whose digest is `digest`), and caches the result.
    fn compile(&self, bytes: &[u8], digest: Digest) -> Result<Arc<Compiled>, PluginError> {
        let module = Module::new(&self.engine, bytes).map_err(|e| {
            // On one line: wasmparser's reasons can hold pretty-printed byte arrays, which an
            // error message (a JSON string, a log line) would carry as `\n    0x61,` runs.
            let reason = format!("{e:#}")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            // The pooling allocator refuses, at compile time, memories over the cap.
            if reason.contains("pooling allocator") {
                PluginError::Invalid(format!(
                    "the module needs more memory than plugins may use ({} bytes, PLUGIN_MEMORY_BYTES): {reason}",
                    self.limits.memory_bytes
                ))
            } else {
                PluginError::Invalid(format!("not a valid WebAssembly module: {reason}"))
            }
        })?;
        let imports: Vec<String> = module
            .imports()
            .map(|i| format!("{}::{}", i.module(), i.name()))
            .collect();
        if !imports.is_empty() {
            return Err(PluginError::Invalid(format!(
                "plugins must be pure and import nothing, but this module imports {}",
                imports.join(", ")
            )));
        }
        let kind = kind_of(&module)?;
        if let Some(wasmtime::ExternType::Memory(memory)) = module.get_export("memory") {
            let initial = memory.minimum().saturating_mul(65536);
            if initial > self.limits.memory_bytes as u64 {
                return Err(PluginError::Invalid(format!(
                    "the module starts with {initial} bytes of memory; plugins may use {} (PLUGIN_MEMORY_BYTES)",
                    self.limits.memory_bytes
                )));
            }
        }
        let pre = Linker::<CallState>::new(&self.engine)
            .instantiate_pre(&module)
            .map_err(|e| PluginError::Invalid(e.to_string()))?;
        let compiled = Arc::new(Compiled {
            digest,
            kind,
            size: bytes.len(),
            pre,
        });
        self.compiled
            .write()
            .expect("plugin cache lock")
            .insert(digest, compiled.clone());
        Ok(compiled)
    }

    /// The compiled plugin with `digest`, if loaded.
    pub fn get(&self, digest: &Digest) -> Option<Arc<Compiled>> {
        self.compiled
            .read()
            .expect("plugin cache lock")
            .get(digest)
            .cloned()
    }

    /// Runs `condition` on `input` (the ABI's JSON): true or false, or a deterministic failure.
    pub fn condition(&self, plugin: &Compiled, input: &[u8]) -> Result<bool, PluginFailure> {
        self.condition_with_fuel(plugin, input, self.limits.fuel).0
    }

    /// Runs `condition` with at most `fuel` (and never more than a call's limit), and says how
    /// much it burnt: the plugin calls of one log entry share one budget.
    pub fn condition_with_fuel(
        &self,
        plugin: &Compiled,
        input: &[u8],
        fuel: u64,
    ) -> (Result<bool, PluginFailure>, u64) {
        let started = std::time::Instant::now();
        let fuel = fuel.min(self.limits.fuel);
        let mut spent = 0;
        let result = self.run_condition(plugin, input, fuel, &mut spent);
        let outcome = match &result {
            Ok(true) => "true",
            Ok(false) => "false",
            Err(e) => e.label(),
        };
        self.metrics.observe("condition", outcome, started);
        (result, spent)
    }

    /// Runs `transform` on `input`: the output JSON, checked to be one JSON value.
    pub fn transform(&self, plugin: &Compiled, input: &[u8]) -> Result<Vec<u8>, PluginFailure> {
        self.transform_with_fuel(plugin, input, self.limits.fuel).0
    }

    /// Runs `transform` with at most `fuel` (and never more than a call's limit), and says how
    /// much it burnt: for reads, whose transforms share one budget per request.
    pub fn transform_with_fuel(
        &self,
        plugin: &Compiled,
        input: &[u8],
        fuel: u64,
    ) -> (Result<Vec<u8>, PluginFailure>, u64) {
        let started = std::time::Instant::now();
        let fuel = fuel.min(self.limits.fuel);
        let mut spent = 0;
        let result = self.run_transform(plugin, input, fuel, &mut spent);
        let outcome = result.as_ref().map_or_else(|e| e.label(), |_| "ok");
        self.metrics.observe("transform", outcome, started);
        (result, spent)
    }

    /// The host's metrics, to register with the node's registry.
    pub fn metrics(&self) -> &PluginMetrics {
        &self.metrics
    }

    fn run_condition(
        &self,
        plugin: &Compiled,
        input: &[u8],
        fuel: u64,
        spent: &mut u64,
    ) -> Result<bool, PluginFailure> {
        let mut call = self.start_with_fuel(plugin, input, fuel)?;
        let instance = call.instance();
        let func: TypedFunc<(i32, i32), i32> = instance
            .get_typed_func(call.store_mut(), "condition")
            .map_err(|_| PluginFailure::Abi("the plugin has no `condition` export".into()))?;
        let (ptr, len) = (call.ptr, call.len);
        let verdict = func.call(call.store_mut(), (ptr, len));
        *spent = fuel - call.store_mut().get_fuel().unwrap_or(0).min(fuel);
        call.failed = verdict.is_err();
        match verdict.map_err(failure)? {
            1 => Ok(true),
            0 => Ok(false),
            code => Err(PluginFailure::Error(code as i64)),
        }
    }

    fn run_transform(
        &self,
        plugin: &Compiled,
        input: &[u8],
        fuel: u64,
        spent: &mut u64,
    ) -> Result<Vec<u8>, PluginFailure> {
        let mut call = self.start_with_fuel(plugin, input, fuel)?;
        let instance = call.instance();
        let func: TypedFunc<(i32, i32), i64> = instance
            .get_typed_func(call.store_mut(), "transform")
            .map_err(|_| PluginFailure::Abi("the plugin has no `transform` export".into()))?;
        let (ptr, len) = (call.ptr, call.len);
        let packed = func.call(call.store_mut(), (ptr, len));
        *spent = fuel - call.store_mut().get_fuel().unwrap_or(0).min(fuel);
        call.failed = packed.is_err();
        let packed = packed.map_err(failure)?;
        if packed < 0 {
            return Err(PluginFailure::Error(packed));
        }
        let (ptr, len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
        if len > self.limits.max_output_bytes {
            return Err(PluginFailure::Output(format!(
                "{len} bytes of output; the limit is {}",
                self.limits.max_output_bytes
            )));
        }
        let memory = call.memory();
        let data = memory.data(call.store_mut());
        let out = data
            .get(ptr..ptr.saturating_add(len))
            .ok_or_else(|| PluginFailure::Output(format!("output {ptr}+{len} is outside memory")))?
            .to_vec();
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&out) {
            return Err(PluginFailure::Output(format!(
                "output is not one JSON value: {e}"
            )));
        }
        if crate::model::json_nests_deeper_than(&out, crate::model::MAX_JSON_DEPTH) {
            return Err(PluginFailure::Output(format!(
                "output nests arrays and objects deeper than {} levels",
                crate::model::MAX_JSON_DEPTH
            )));
        }
        Ok(out)
    }

    /// One instance kept for many calls — for measuring what a fresh instance per call costs.
    /// Apply never uses it: state a plugin keeps between calls would make outcomes depend on
    /// each replica's call history.
    pub fn session<'h>(&'h self, plugin: &Compiled) -> Result<Session<'h>, PluginFailure> {
        // A store of its own: a session is held for long, and a shared store would keep the
        // slots of other calls' finished instances from them while it lasts.
        self.take_slot();
        let call = self.start_in(self.new_store(), plugin, b"{}", self.limits.fuel)?;
        Ok(Session { host: self, call })
    }

    /// A fresh instance with `input` copied into memory it allocated, and `fuel` for the
    /// whole call.
    fn start_with_fuel<'h>(
        &'h self,
        plugin: &Compiled,
        input: &[u8],
        fuel: u64,
    ) -> Result<Call<'h>, PluginFailure> {
        // The slot first: a store taken from the idle ones before it could hold the very slots
        // this call would wait for.
        self.take_slot();
        let idle = self.idle.lock().expect("idle stores lock").pop();
        let store = idle.unwrap_or_else(|| self.new_store());
        self.start_in(store, plugin, input, fuel)
    }

    /// Starts a call in `store` with a slot already taken for it: a fresh instance with `input`
    /// copied into memory it allocated.
    fn start_in<'h>(
        &'h self,
        store: CallStore,
        plugin: &Compiled,
        input: &[u8],
        fuel: u64,
    ) -> Result<Call<'h>, PluginFailure> {
        let mut call = Call {
            host: self,
            store: Some(store),
            failed: true,
            instance: None,
            ptr: 0,
            len: 0,
        };
        if let Some(store) = call.store.as_mut() {
            store.instances += 1;
        }
        let store = call.store_mut();
        store
            .set_fuel(fuel)
            .map_err(|e| PluginFailure::Abi(e.to_string()))?;
        let instance = plugin.pre.instantiate(&mut *store).map_err(failure)?;
        let memory = instance
            .get_memory(&mut *store, "memory")
            .ok_or_else(|| PluginFailure::Abi("the plugin exports no `memory`".into()))?;
        let alloc: TypedFunc<i32, i32> = instance
            .get_typed_func(&mut *store, "alloc")
            .map_err(|_| PluginFailure::Abi("the plugin has no `alloc(i32) -> i32`".into()))?;
        let len = i32::try_from(input.len())
            .map_err(|_| PluginFailure::Abi("input over 2 GiB".into()))?;
        let ptr = alloc.call(&mut *store, len).map_err(failure)?;
        memory
            .write(&mut *store, ptr as u32 as usize, input)
            .map_err(|_| PluginFailure::Abi(format!("alloc returned {ptr}, outside memory")))?;
        call.instance = Some((instance, memory));
        call.ptr = ptr;
        call.len = len;
        call.failed = false;
        Ok(call)
    }

    /// A store for up to [`CALLS_PER_STORE`] calls, each instance within the memory cap.
    fn new_store(&self) -> CallStore {
        let per_store = CALLS_PER_STORE as usize;
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .instances(per_store)
            .memories(per_store)
            .tables(per_store)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(&self.engine, CallState { limits });
        store.limiter(|state| &mut state.limits);
        CallStore {
            store,
            instances: 0,
        }
    }

    /// Takes an instance slot, waiting for one if none is free. Idle stores hold slots for
    /// instances that have finished: they are dropped first, so a call never waits on them.
    /// Stores become idle under the slots lock (see `Call`'s drop), so a caller that found none
    /// is already waiting when one does, and is woken for it.
    fn take_slot(&self) {
        let mut slots = self.slots.lock().expect("slots lock");
        loop {
            if slots.free > 0 {
                slots.free -= 1;
                return;
            }
            let idle = self.idle.lock().expect("idle stores lock").pop();
            match idle {
                Some(store) => {
                    // Dropped before its slots are counted free: the pool takes them back then.
                    let held = store.instances;
                    drop(store);
                    slots.free += held;
                }
                None => {
                    slots.waiting += 1;
                    slots = self.freed.wait(slots).expect("slots lock");
                    slots.waiting -= 1;
                }
            }
        }
    }

    /// Drops a store, then gives back the slots its instances held.
    fn retire(&self, store: CallStore) {
        let held = store.instances;
        drop(store);
        let mut slots = self.slots.lock().expect("slots lock");
        slots.free += held;
        for _ in 0..held.min(slots.waiting) {
            self.freed.notify_one();
        }
    }

    /// Keeps a store for the next call, waking a caller that waits for its slots.
    fn keep_idle(&self, store: CallStore) {
        let slots = self.slots.lock().expect("slots lock");
        self.idle.lock().expect("idle stores lock").push(store);
        if slots.waiting > 0 {
            self.freed.notify_one();
        }
    }
}

/// A kept instance (see [`PluginHost::session`]).
pub struct Session<'h> {
    host: &'h PluginHost,
    call: Call<'h>,
}

impl Session<'_> {
    /// Runs `condition` on `input` in the kept instance, with fresh fuel.
    pub fn condition(&mut self, input: &[u8]) -> Result<bool, PluginFailure> {
        let call = &mut self.call;
        let (instance, memory) = (call.instance(), call.memory());
        let store = call.store_mut();
        store
            .set_fuel(self.host.limits.fuel)
            .map_err(|e| PluginFailure::Abi(e.to_string()))?;
        let alloc: TypedFunc<i32, i32> = instance
            .get_typed_func(&mut *store, "alloc")
            .map_err(|_| PluginFailure::Abi("no alloc".into()))?;
        let len = input.len() as i32;
        let ptr = alloc.call(&mut *store, len).map_err(failure)?;
        memory
            .write(&mut *store, ptr as u32 as usize, input)
            .map_err(|_| PluginFailure::Abi("alloc returned memory outside".into()))?;
        let func: TypedFunc<(i32, i32), i32> = instance
            .get_typed_func(&mut *store, "condition")
            .map_err(|_| PluginFailure::Abi("no condition".into()))?;
        let verdict = func.call(&mut *store, (ptr, len)).map_err(failure)?;
        let dealloc: TypedFunc<(i32, i32), ()> = instance
            .get_typed_func(&mut *store, "dealloc")
            .map_err(|_| PluginFailure::Abi("no dealloc".into()))?;
        dealloc.call(&mut *store, (ptr, len)).map_err(failure)?;
        Ok(verdict == 1)
    }
}

/// One call's instance, in a store it returns to the idle stores when done (or drops, when the
/// store is full or the call failed).
struct Call<'h> {
    host: &'h PluginHost,
    store: Option<CallStore>,
    /// Set until the call has an instance with its input; a failed call's store is dropped
    /// rather than reused.
    failed: bool,
    instance: Option<(wasmtime::Instance, wasmtime::Memory)>,
    ptr: i32,
    len: i32,
}

impl Call<'_> {
    fn store_mut(&mut self) -> &mut Store<CallState> {
        &mut self
            .store
            .as_mut()
            .expect("a call has its store until dropped")
            .store
    }

    fn instance(&self) -> wasmtime::Instance {
        self.instance.expect("a started call has an instance").0
    }

    fn memory(&self) -> wasmtime::Memory {
        self.instance.expect("a started call has an instance").1
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        if self.failed || store.instances >= CALLS_PER_STORE {
            self.host.retire(store);
        } else {
            self.host.keep_idle(store);
        }
    }
}

/// A failed call as a deterministic failure: out of fuel, or the trap's kind (never a message
/// with addresses or a backtrace, which could differ between nodes).
fn failure(e: wasmtime::Error) -> PluginFailure {
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => PluginFailure::OutOfFuel,
        Some(trap) => PluginFailure::Trap(trap.to_string()),
        None => PluginFailure::Trap("the call failed".into()),
    }
}

/// What a module can be used as, from its exports; refuses modules missing the ABI.
fn kind_of(module: &Module) -> Result<PluginKind, PluginError> {
    use wasmtime::{ExternType, ValType};
    let func = |name: &str| match module.get_export(name) {
        Some(ExternType::Func(f)) => Some(f),
        _ => None,
    };
    let is = |ty: &Option<wasmtime::FuncType>, params: &[&str], results: &[&str]| {
        let name = |v: ValType| match v {
            ValType::I32 => "i32",
            ValType::I64 => "i64",
            _ => "other",
        };
        ty.as_ref().is_some_and(|f| {
            f.params().map(name).collect::<Vec<_>>() == params
                && f.results().map(name).collect::<Vec<_>>() == results
        })
    };
    let missing = |what: &str| {
        PluginError::Invalid(format!(
            "the module does not export {what} (see the plugin ABI: memory, alloc, dealloc, condition and/or transform)"
        ))
    };
    if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
        return Err(missing("`memory`"));
    }
    if !is(&func("alloc"), &["i32"], &["i32"]) {
        return Err(missing("`alloc(len: i32) -> i32`"));
    }
    if !is(&func("dealloc"), &["i32", "i32"], &[]) {
        return Err(missing("`dealloc(ptr: i32, len: i32)`"));
    }
    let condition = func("condition");
    let transform = func("transform");
    if condition.is_some() && !is(&condition, &["i32", "i32"], &["i32"]) {
        return Err(missing(
            "`condition(ptr: i32, len: i32) -> i32` with that signature",
        ));
    }
    if transform.is_some() && !is(&transform, &["i32", "i32"], &["i64"]) {
        return Err(missing(
            "`transform(ptr: i32, len: i32) -> i64` with that signature",
        ));
    }
    match (condition.is_some(), transform.is_some()) {
        (true, true) => Ok(PluginKind::Both),
        (true, false) => Ok(PluginKind::Condition),
        (false, true) => Ok(PluginKind::Transform),
        (false, false) => Err(missing("`condition` or `transform`")),
    }
}
