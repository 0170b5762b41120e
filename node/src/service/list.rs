//! Listing one pk's records: a page from one store snapshot. With an `if`, the records are
//! filtered off the async threads, a bounded number of lists at once, under one evaluation budget
//! per request ([`LIST_LIMITS`]), and the scan stops as soon as the caller goes away.

use super::cancel::Cancellation;
use super::read::answer_bytes;
use super::route::Route;
use super::{ErrorKind, Service, ServiceError};
use crate::cond::{Budget, CondError, Conditions, LIST_LIMITS, Subject};
use crate::engine::PartitionRuntime;
use crate::model::{ListRequest, READ_ANSWER_BYTES, Record, partition_of};
use crate::store::StoreError;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a list with `if` waits for an evaluation slot before it is refused as busy.
const SLOT_WAIT: Duration = Duration::from_secs(2);

/// One page of a list.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub records: Vec<Record>,
    /// Present when more records may follow: pass it as `cursor` to get them.
    pub next_cursor: Option<String>,
    /// The watch token of the pk's partition, taken before reading (on the owner, for a page
    /// read through one; `None` from owners that predate it): read, then watch from it, and no
    /// change is missed.
    pub token: Option<String>,
    /// The partition's committed next offset once the page was read (on the owner, for a page
    /// read through one; `None` from owners that predate it): the page reflects nothing past
    /// it, so a later read that waits for the offset before it sees at least this page's state.
    pub read_through: Option<u64>,
}

/// Slots for lists that evaluate an `if`: a few run at once, the rest wait briefly, then get a
/// 503 `busy` — so expensive reads cannot take every core from the rest of the node.
#[derive(Clone)]
pub(super) struct EvalSlots {
    slots: Arc<Semaphore>,
    capacity: usize,
}

impl EvalSlots {
    /// As many slots as the machine has cores.
    pub(super) fn new() -> Self {
        let capacity = std::thread::available_parallelism().map_or(2, |n| n.get());
        EvalSlots {
            slots: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }
}

/// Sets the flag when the request that started a scan is dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A list's `if`, compiled.
struct Filter {
    conds: Arc<Conditions>,
    source: String,
    program: Arc<expr::Program>,
}

/// Why a scan ended without a page.
enum ScanError {
    Store(StoreError),
    /// The `if` cannot be evaluated on a record (a 400: the condition is the caller's).
    Condition(String),
    /// The caller went away.
    Cancelled,
}

impl Service {
    /// One page of `pk`'s records, from this node or an owner in the region. See
    /// [`Service::list_local`] for the semantics.
    pub async fn list(&self, request: ListRequest) -> Result<ListPage, ServiceError> {
        self.validate_key(None, &request.pk, &request.sk_prefix)?;
        self.check_positions(&request.min_offsets)?;
        let partition = partition_of(&request.pk, self.engine.partition_count());
        let cluster = match self.route_waited(partition, &request.min_offsets).await? {
            Route::Local(_) => return self.list_local(request).await,
            Route::Remote(cluster) => cluster,
        };
        if let Some(source) = &request.cond {
            // A bad `if` is this request's fault: say so without a hop.
            self.conds
                .check(source)
                .map_err(|e| ServiceError::bad_request("invalid_if", e.to_string()))?;
        }
        let (local_waits, positions) =
            self.split_positions(&request.min_offsets, &BTreeMap::from([(partition, ())]));
        self.wait_for(&local_waits).await?;
        let query = ListRequest {
            min_offsets: positions,
            ..request
        };
        self.list_remote(&cluster, partition, query).await
    }

    /// One page of `pk`'s records from this node only (what a peer answers for a proxied list).
    /// FireScroll semantics: `sk_prefix` filters by prefix and skips the record whose sk equals
    /// a non-empty prefix; `limit` counts returned records; `if` filters; `if_stop` ends the
    /// scan at the first record the condition rejects. A page whose `if` spends the request's
    /// budget ends early, with a cursor to continue from.
    pub async fn list_local(&self, request: ListRequest) -> Result<ListPage, ServiceError> {
        self.validate_key(None, &request.pk, &request.sk_prefix)?;
        let filter = match &request.cond {
            None => None,
            Some(source) => Some(Filter {
                conds: self.conds.clone(),
                source: source.clone(),
                program: self
                    .conds
                    .check(source)
                    .map_err(|e| ServiceError::bad_request("invalid_if", e.to_string()))?,
            }),
        };
        self.wait_for(&request.min_offsets).await?;
        let partition = partition_of(&request.pk, self.engine.partition_count());
        let runtime = self.caught_up_partition(partition).await?;
        let max = self.config.limits.max_list_records as u64;
        let limit = if request.limit == 0 {
            max
        } else {
            request.limit.min(max)
        } as usize;
        let started = Instant::now();
        let token = self.read_token([request.pk.as_str()]);
        let read = runtime.clone();
        let page = match filter {
            // No `if`: reading is cheap, and bounded by the page size.
            None => scan_page(&runtime, &request, None, limit, &Cancellation::never()),
            Some(filter) => {
                let slot = self.eval_slot().await?;
                let cancellation = Cancellation::for_this_request();
                let cancel = CancelOnDrop(cancellation.dropped.clone());
                let metrics = self.metrics.clone();
                let scan = tokio::task::spawn_blocking(move || {
                    let _slot: OwnedSemaphorePermit = slot;
                    let page = scan_page(&runtime, &request, Some(&filter), limit, &cancellation);
                    // Counted here: the request that asked may be gone already.
                    if let Err(ScanError::Cancelled) = page {
                        metrics.reads_cancelled.inc();
                    }
                    page
                });
                let page = scan
                    .await
                    .map_err(|e| ServiceError::internal(format!("list task failed: {e}")))?;
                drop(cancel);
                page
            }
        };
        let page = page.map_err(|e| match e {
            ScanError::Store(e) => self.read_failed(partition, e),
            ScanError::Condition(message) => ServiceError::bad_request("if_failed", message),
            ScanError::Cancelled => {
                ServiceError::internal("the list was cancelled: its client went away")
            }
        })?;
        let label = if page.records.is_empty() {
            "list_full_miss"
        } else {
            "list"
        };
        self.metrics
            .observe_partition(label, crate::metrics::micros(started.elapsed()));
        let read_through = read.committed_next_offset().ok();
        Ok(ListPage {
            token,
            read_through,
            ..page
        })
    }

    /// A slot for expensive read work (a list's `if`, read transforms), or a 503 when none frees
    /// up in time.
    pub(super) async fn eval_slot(&self) -> Result<OwnedSemaphorePermit, ServiceError> {
        let slots = self.eval_slots.slots.clone();
        match tokio::time::timeout(SLOT_WAIT, slots.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                self.metrics
                    .requests_refused
                    .with_label_values(&["busy"])
                    .inc();
                Err(ServiceError::new(
                    ErrorKind::Unavailable,
                    "busy",
                    format!(
                        "too many lists with `if` are running on this node ({} at once); \
                         retry shortly, or list without `if`",
                        self.eval_slots.capacity
                    ),
                ))
            }
        }
    }
}

/// Reads one page from a snapshot. Runs on a blocking thread when there is a filter.
fn scan_page(
    runtime: &PartitionRuntime,
    request: &ListRequest,
    filter: Option<&Filter>,
    limit: usize,
    cancellation: &Cancellation,
) -> Result<ListPage, ScanError> {
    let mut scan = runtime.scan(&request.pk, &request.sk_prefix, request.cursor.as_deref());
    let mut page = ListPage::default();
    let mut budget = Budget::new(LIST_LIMITS);
    // The sk of the last record this page has fully looked at: where a page cut short by the
    // budget resumes.
    let mut examined: Option<String> = None;
    let mut stopped = false;
    // What the page answers: past READ_ANSWER_BYTES it ends, with a cursor (10,000 records of
    // 512 KiB made one 5 GB answer).
    let mut bytes = 0usize;
    for record in scan.by_ref() {
        if cancellation.is_cancelled() {
            return Err(ScanError::Cancelled);
        }
        let record = record.map_err(ScanError::Store)?;
        if request.skip_prefix_itself
            && !request.sk_prefix.is_empty()
            && record.sk == request.sk_prefix
        {
            continue;
        }
        if let Some(filter) = filter {
            match keep(filter, &record, &mut budget) {
                Ok(true) => {}
                Ok(false) if request.if_stop => {
                    stopped = true;
                    break;
                }
                Ok(false) => {
                    examined = Some(record.sk);
                    continue;
                }
                Err(e @ CondError::BudgetExceeded { .. }) => {
                    return match examined {
                        Some(sk) => {
                            page.next_cursor = Some(sk);
                            Ok(page)
                        }
                        None => Err(ScanError::Condition(format!(
                            "{e}: evaluating it on the record with sk {:?} alone takes more than \
                             one list request may spend ({} steps, {} MiB of values)",
                            record.sk,
                            LIST_LIMITS.steps,
                            LIST_LIMITS.bytes >> 20
                        ))),
                    };
                }
                Err(e) => return Err(ScanError::Condition(e.to_string())),
            }
        }
        bytes += answer_bytes(&record);
        if bytes > READ_ANSWER_BYTES && !page.records.is_empty() {
            // The next page starts at this record.
            page.next_cursor = examined;
            return Ok(page);
        }
        examined = Some(record.sk.clone());
        page.records.push(record);
        if page.records.len() >= limit {
            break;
        }
    }
    if !stopped && page.records.len() >= limit && scan.next().is_some() {
        page.next_cursor = page.records.last().map(|r| r.sk.clone());
    }
    Ok(page)
}

/// Whether `record` passes the filter.
fn keep(filter: &Filter, record: &Record, budget: &mut Budget) -> Result<bool, CondError> {
    let subject =
        Subject::new(&record.pk, &record.sk, Some(record.stored())).map_err(|reason| {
            CondError::Runtime {
                expr: filter.source.clone(),
                reason: format!(
                    "the record with sk {:?} cannot be evaluated: {reason}",
                    record.sk
                ),
            }
        })?;
    filter
        .conds
        .eval(&filter.source, &filter.program, &subject, budget)
}
