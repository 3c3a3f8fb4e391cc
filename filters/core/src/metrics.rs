//! Counters named `palisade.<filter>.<event>[.<reason>]`.
//!
//! Envoy shows them as `wasmcustom.palisade.…` in `/stats` and without the
//! prefix in `/stats/prometheus`. The ABI has no labels, so the reason is the
//! last dotted part; `stats_tags` can lift it into a label (see docs/src/operations/metrics.md).

use crate::host::{Host, Level};

/// The full metric name of a filter's event.
pub fn metric_name(filter: &str, event: &str) -> String {
    format!("palisade.{filter}.{event}")
}

/// Counters defined once per VM at configure time, counted per request.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    ids: Vec<(String, Option<u32>)>,
}

impl Metrics {
    /// Defines every event the filter can count, plus `denied.<reason>` and
    /// `shadow_denied.<reason>` for each denial reason (counted by
    /// [`crate::RequestContext::reject`]). Undefined events are logged, not counted.
    pub fn define(host: &mut dyn Host, filter: &str, events: &[&str], reasons: &[&str]) -> Metrics {
        let names = events.iter().map(|e| e.to_string()).chain(
            reasons
                .iter()
                .flat_map(|r| [format!("denied.{r}"), format!("shadow_denied.{r}")]),
        );
        let ids = names
            .map(|e| {
                let id = host.define_counter(&metric_name(filter, &e));
                (e, id)
            })
            .collect();
        Metrics { ids }
    }

    pub fn inc(&self, host: &mut dyn Host, event: &str) {
        match self.ids.iter().find(|(e, _)| *e == event) {
            Some((_, Some(id))) => host.increment_counter(*id, 1),
            Some((_, None)) => {}
            None => host.log(Level::Error, &format!("metric {event:?} was never defined")),
        }
    }

    /// A defined event's handle, so hot paths count without a name lookup.
    pub fn counter(&self, event: &str) -> Counter {
        Counter(
            self.ids
                .iter()
                .find(|(e, _)| e == event)
                .and_then(|(_, id)| *id),
        )
    }

    /// Whether an event was declared: lets tests prove every counted event exists.
    pub fn defines(&self, event: &str) -> bool {
        self.ids.iter().any(|(e, _)| *e == event)
    }
}

/// A counter resolved at configure time: counting it is one host call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter(Option<u32>);

impl Counter {
    /// Adds `by` (nothing for 0, or if the host refused the counter).
    pub fn add(self, host: &mut dyn Host, by: usize) {
        if let (Some(id), true) = (self.0, by > 0) {
            host.increment_counter(id, i64::try_from(by).unwrap_or(i64::MAX));
        }
    }
}
