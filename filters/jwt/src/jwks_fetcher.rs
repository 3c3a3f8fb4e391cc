//! Remote JWKS through the host, one fetch for all worker VMs.
//!
//! Shared data holds, per provider, the last good set (`jwks.<provider>`:
//! fetch time then the body) and a small control record
//! (`fetch.<provider>`: lease, next due time, failures, last start). A VM
//! whose tick finds the set due takes the lease with a compare-and-swap
//! (only one can), fetches, publishes the set and the next due time; the
//! others adopt the new version on their next tick. A failed fetch keeps the
//! last good set (never an empty one) and retries with exponential backoff.
//! An unknown `kid` may bring the next fetch forward, at most once per
//! `min_refetch_interval_s`. Without shared data (a Kong without an
//! `shm_kv` zone), each VM keeps the same record for itself.

use crate::config::RemoteJwks;
use crate::jwks_cache::ProviderKeys;
use palisade_core::host::{Shared, SharedError};
use palisade_core::{Host, HostKind};
use serde::{Deserialize, Serialize};

pub const NANOS: u64 = 1_000_000_000;
/// Longest wait between two attempts after failures.
const MAX_BACKOFF_S: u64 = 60;

/// What makes a VM want to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The set is due (or missing).
    Scheduled,
    /// A token named a `kid` the set lacks.
    UnknownKid,
}

/// The election and schedule record, JSON in shared data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    pub lease_until: u64,
    pub next_at: u64,
    pub failures: u32,
    pub last_start: u64,
    /// Start of the last fetch an unknown `kid` brought forward: only those
    /// are limited by `min_refetch_interval_s`, so a scheduled fetch just
    /// before a rotation does not delay picking up the new key.
    #[serde(default)]
    pub last_refetch: u64,
}

#[derive(Debug)]
pub struct Fetcher {
    pub provider: String,
    pub config: RemoteJwks,
    keys_key: String,
    control_key: String,
    /// This VM's call in flight: token and start time.
    inflight: Option<(u32, u64)>,
    /// Used when the host has no shared data.
    local_control: Control,
}

/// Whether [`Fetcher::try_start`] dispatched a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The call's token.
    Started(u32),
    /// Not due, another fetch holds the lease, or the host is not known yet.
    NotNow,
    /// The host refused the call (the reason, for the log); the schedule
    /// backs off as after a failed fetch.
    Refused(String),
}

/// How a finished fetch went, for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Updated { keys: usize },
    Failed(String),
}

impl Fetcher {
    /// Keys are the same on every host, so the fetcher is built before the
    /// host is known (Kong reveals itself only in a request).
    pub fn new(filter: &str, provider: &str, config: RemoteJwks) -> Fetcher {
        let key = |name: String| HostKind::Unknown.shared_key(filter, &name);
        Fetcher {
            keys_key: key(format!("jwks.{provider}")),
            control_key: key(format!("fetch.{provider}")),
            provider: provider.to_string(),
            config,
            inflight: None,
            local_control: Control::default(),
        }
    }

    /// Adopts the shared set if another VM published a newer one.
    pub fn sync(&self, host: &dyn Host, keys: &mut ProviderKeys) -> bool {
        let Shared { value, cas } = host.shared_get(&self.keys_key);
        if keys.is_current_version(cas) {
            return false;
        }
        let Some(value) = value else {
            return false;
        };
        let body = value.get(8..).unwrap_or_default();
        keys.adopt(body, cas).is_ok()
    }

    pub fn owns(&self, token: u32) -> bool {
        self.inflight.is_some_and(|(t, _)| t == token)
    }

    pub fn in_flight(&self) -> bool {
        self.inflight.is_some()
    }

    /// Dispatches a fetch if one is due and this VM wins the lease. On
    /// Kong the call goes to `authority` (`host:port`), on Envoy to `cluster`.
    pub fn try_start(&mut self, host: &mut dyn Host, trigger: Trigger, now_ns: u64) -> Start {
        if let Some((_, started)) = self.inflight {
            // A call the host never answered (it should always answer): forget it.
            if now_ns < started.saturating_add(self.lease_ns() + NANOS) {
                return Start::NotNow;
            }
            self.inflight = None;
        }
        // No call before the host is known (Kong reveals itself only in a
        // request): the lease stays free for a VM that can fetch.
        let Some(upstream) = host
            .kind()
            .http_call_upstream(&self.config.cluster, &self.config.authority)
            .map(str::to_string)
        else {
            return Start::NotNow;
        };
        if !self.acquire(host, trigger, now_ns) {
            return Start::NotNow;
        }
        let headers = [
            (":method", "GET"),
            (":path", self.config.path.as_str()),
            (":authority", self.config.authority.as_str()),
            ("accept", "application/json"),
        ];
        match host.http_call(&upstream, &headers, None, self.config.timeout_ms) {
            Ok(token) => {
                self.inflight = Some((token, now_ns));
                Start::Started(token)
            }
            Err(e) => {
                self.record(host, now_ns, false);
                Start::Refused(format!(
                    "the host refused the call to {upstream:?} ({e:?}: {})",
                    match host.kind() {
                        HostKind::Kong => "is authority a reachable host:port?",
                        _ => "does the cluster exist?",
                    }
                ))
            }
        }
    }

    /// Applies a fetch's answer: a good set is adopted and published; a bad
    /// one (status, not JSON, no usable key) leaves the keys as they were.
    pub fn finish(
        &mut self,
        host: &mut dyn Host,
        keys: &mut ProviderKeys,
        status: Option<u16>,
        body: &[u8],
        now_ns: u64,
    ) -> Fetched {
        let elapsed_ms = self
            .inflight
            .take()
            .map(|(_, started)| now_ns.saturating_sub(started) / 1_000_000);
        let outcome = match status {
            Some(200) => match keys.adopt(body, None) {
                Ok(()) => {
                    let mut value = now_ns.to_le_bytes().to_vec();
                    value.extend_from_slice(body);
                    if host.shared_set(&self.keys_key, &value, None).is_ok() {
                        let version = host.shared_get(&self.keys_key).cas;
                        keys.mark_version(version);
                    }
                    Fetched::Updated {
                        keys: keys.current().map(|k| k.keys.len()).unwrap_or(0),
                    }
                }
                Err(e) => Fetched::Failed(e),
            },
            Some(s) => Fetched::Failed(format!("the JWKS endpoint answered {s}")),
            None => Fetched::Failed(no_answer(elapsed_ms, self.config.timeout_ms)),
        };
        self.record(host, now_ns, matches!(outcome, Fetched::Updated { .. }));
        outcome
    }

    fn lease_ns(&self) -> u64 {
        self.config.timeout_ms.saturating_mul(1_000_000) + NANOS
    }

    fn due(&self, control: &Control, trigger: Trigger, now_ns: u64) -> bool {
        if now_ns < control.lease_until {
            return false;
        }
        match trigger {
            Trigger::Scheduled => now_ns >= control.next_at,
            Trigger::UnknownKid => {
                control.last_refetch == 0
                    || now_ns
                        >= control.last_refetch.saturating_add(
                            self.config.min_refetch_interval_s.saturating_mul(NANOS),
                        )
            }
        }
    }

    /// Takes the lease with a compare-and-swap; only one VM can win a version.
    fn acquire(&mut self, host: &mut dyn Host, trigger: Trigger, now_ns: u64) -> bool {
        let mut shared = host.shared_get(&self.control_key);
        if shared.value.is_none() {
            let initial = encode(&Control::default());
            if host.shared_set(&self.control_key, &initial, None) == Err(SharedError::Unavailable) {
                return self.acquire_local(trigger, now_ns);
            }
            shared = host.shared_get(&self.control_key);
        }
        let control = decode(shared.value.as_deref());
        if !self.due(&control, trigger, now_ns) {
            return false;
        }
        let leased = Control {
            lease_until: now_ns.saturating_add(self.lease_ns()),
            last_start: now_ns,
            last_refetch: match trigger {
                Trigger::UnknownKid => now_ns,
                Trigger::Scheduled => control.last_refetch,
            },
            ..control
        };
        match host.shared_set(&self.control_key, &encode(&leased), shared.cas) {
            Ok(()) => true,
            Err(SharedError::CasMismatch) => false,
            Err(SharedError::Unavailable) => self.acquire_local(trigger, now_ns),
        }
    }

    fn acquire_local(&mut self, trigger: Trigger, now_ns: u64) -> bool {
        let control = self.local_control;
        if !self.due(&control, trigger, now_ns) {
            return false;
        }
        self.local_control.lease_until = now_ns.saturating_add(self.lease_ns());
        self.local_control.last_start = now_ns;
        if trigger == Trigger::UnknownKid {
            self.local_control.last_refetch = now_ns;
        }
        true
    }

    /// Releases the lease and schedules the next fetch.
    fn record(&mut self, host: &mut dyn Host, now_ns: u64, success: bool) {
        let next = |c: Control| -> Control {
            if success {
                Control {
                    lease_until: 0,
                    next_at: now_ns
                        .saturating_add(self.config.cache_duration_s.saturating_mul(NANOS)),
                    failures: 0,
                    ..c
                }
            } else {
                let failures = c.failures.saturating_add(1);
                Control {
                    lease_until: 0,
                    next_at: now_ns.saturating_add(self.backoff_s(failures).saturating_mul(NANOS)),
                    failures,
                    ..c
                }
            }
        };
        for _ in 0..4 {
            let shared = host.shared_get(&self.control_key);
            let updated = next(decode(shared.value.as_deref()));
            match host.shared_set(&self.control_key, &encode(&updated), shared.cas) {
                Ok(()) => return,
                Err(SharedError::CasMismatch) => continue,
                Err(SharedError::Unavailable) => break,
            }
        }
        self.local_control = next(self.local_control);
    }

    /// 1, 2, 4… seconds, at most a minute and at most the cache duration.
    pub fn backoff_s(&self, failures: u32) -> u64 {
        let cap = MAX_BACKOFF_S.min(self.config.cache_duration_s).max(1);
        (1u64 << failures.saturating_sub(1).min(10)).min(cap)
    }

    /// The control record as shared now (tests and logs).
    pub fn control(&self, host: &dyn Host) -> Control {
        decode(host.shared_get(&self.control_key).value.as_deref())
    }
}

fn encode(control: &Control) -> Vec<u8> {
    serde_json::to_vec(control).unwrap_or_default()
}

/// A record that cannot be read (evicted, garbage) reads as "due now".
fn decode(value: Option<&[u8]>) -> Control {
    value
        .and_then(|v| serde_json::from_slice(v).ok())
        .unwrap_or_default()
}

/// Why a call came back without an answer. Envoy gives no reason, but the
/// time tells a timeout from a connection that failed at once (refused,
/// reset, or a TLS handshake the upstream's `ca`/`sni` did not accept).
fn no_answer(elapsed_ms: Option<u64>, timeout_ms: u64) -> String {
    match elapsed_ms {
        Some(ms) if ms.saturating_mul(10) >= timeout_ms.saturating_mul(9) => {
            format!("no answer within timeout_ms ({timeout_ms} ms)")
        }
        Some(ms) => format!(
            "the connection failed after {ms} ms (refused, reset, or a TLS handshake \
             failed: check the upstream's address, ca and sni)"
        ),
        None => "no answer from the JWKS endpoint".into(),
    }
}
