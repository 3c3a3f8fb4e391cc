//! What a filter implements: plain Rust over [`Host`], no proxy-wasm types, so
//! the same code runs in Envoy, in Kong and in native tests.

use crate::audit::AuditMode;
use crate::config::ConfigError;
use crate::host::{CallResponse, Host, HostKind};
use std::rc::Rc;

/// Whether the host should go on with the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop here: after a local reply, or to buffer a body.
    Pause,
}

/// One request's worth of filter logic. Every callback has a harmless default.
pub trait HttpFilter {
    fn on_request_headers(&mut self, _host: &mut dyn Host, _end_of_stream: bool) -> Flow {
        Flow::Continue
    }

    fn on_request_body(
        &mut self,
        _host: &mut dyn Host,
        _size: usize,
        _end_of_stream: bool,
    ) -> Flow {
        Flow::Continue
    }

    /// Request trailers end a stream whose last body callback did not say
    /// `end_of_stream` (HTTP/2, gRPC): a filter buffering the body must
    /// finish its check here, or the request would go on unchecked.
    fn on_request_trailers(&mut self, _host: &mut dyn Host) -> Flow {
        Flow::Continue
    }

    fn on_response_headers(&mut self, _host: &mut dyn Host, _end_of_stream: bool) -> Flow {
        Flow::Continue
    }

    fn on_response_body(
        &mut self,
        _host: &mut dyn Host,
        _size: usize,
        _end_of_stream: bool,
    ) -> Flow {
        Flow::Continue
    }

    /// Response trailers (gRPC status lives there). Never called on Kong.
    fn on_response_trailers(&mut self, _host: &mut dyn Host) -> Flow {
        Flow::Continue
    }

    /// The answer to a call this stream made (after returning
    /// [`Flow::Pause`] from a request callback). Request headers can still
    /// be read and changed here. `Continue` resumes the request; return
    /// `Pause` after a local reply, or to keep waiting for another call.
    fn on_call_response(&mut self, _host: &mut dyn Host, _response: CallResponse) -> Flow {
        Flow::Continue
    }

    /// The stream ended, however it ended: completed, reset by the client
    /// or the upstream, timed out, or answered by another filter. Called
    /// once per stream on both hosts (Envoy's and ngx_wasm_module's
    /// `proxy_on_done`): what a request holds in shared state (an in-flight
    /// slot, a reserved token) is given back here, never in a response
    /// callback that a reset would skip.
    fn on_stream_done(&mut self, _host: &mut dyn Host) {}

    /// The control that holds the stream after a Pause, when it is not the
    /// plugin itself (a chain names the control that stopped it): the
    /// glue's watchdog answers and logs in its name.
    fn holder(&self) -> Option<&'static str> {
        None
    }
}

/// A configured filter, shared by all requests of one VM.
pub trait Plugin: Sized + 'static {
    /// Short name: metrics (`palisade.<NAME>.*`), logs and published decisions use it.
    const NAME: &'static str;
    type Filter: HttpFilter + 'static;

    /// Parses and validates the config and defines metrics. An error makes the
    /// host refuse the filter: it must never run half-configured.
    fn configure(config: &[u8], host: &mut dyn Host) -> Result<Self, ConfigError>;

    fn new_filter(plugin: &Rc<Self>) -> Self::Filter;

    /// Options the host cannot serve, refused by name. Run at configure
    /// time when the host is known there (Envoy), else when the first
    /// request reveals it (Kong answers no property in root contexts):
    /// then every request is refused, as a refused config would be.
    fn check_host(&self, _kind: HostKind) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Whether a request callback may return Pause to wait for the body
    /// with no call pending. The glue then answers such a request with a
    /// 500 and one log line naming the missing proxy setting when no body
    /// callback comes within `glue::HOLD_TIMEOUT_NS`.
    fn holds_request_headers(&self) -> bool {
        false
    }

    /// The same for response headers held while the response body is
    /// read: without the setting Envoy never calls the body callbacks, and
    /// the client would wait for a response that never comes.
    fn holds_response_headers(&self) -> bool {
        false
    }

    /// The control's `audit` setting: with [`AuditMode::All`] the glue
    /// writes the record's line when a let-through stream ends.
    fn audit_mode(&self) -> AuditMode {
        AuditMode::Denials
    }

    /// How often [`Plugin::on_tick`] runs in each VM, read once after configure.
    fn tick_period_ms(&self) -> Option<u64> {
        None
    }

    /// Background work of one VM (each worker has its own): refreshing
    /// remote state, for example. Never panic here: on Kong a panicking tick
    /// makes ticks multiply.
    fn on_tick(&self, _host: &mut dyn Host) {}

    /// The answer to a call made from [`Plugin::on_tick`] or `configure`.
    fn on_call_response(&self, _host: &mut dyn Host, _response: CallResponse) {}
}

/// A configured [`Plugin`] with its type erased, so one module can hold
/// several controls (the one-VM chain) and run them side by side.
pub trait Control {
    fn name(&self) -> &'static str;
    fn new_filter(&self) -> Box<dyn HttpFilter>;
    fn check_host(&self, kind: HostKind) -> Result<(), ConfigError>;
    fn tick_period_ms(&self) -> Option<u64>;
    fn on_tick(&self, host: &mut dyn Host);
    fn on_call_response(&self, host: &mut dyn Host, response: CallResponse);
    fn holds_request_headers(&self) -> bool;
    fn holds_response_headers(&self) -> bool;
    fn audit_mode(&self) -> AuditMode;
}

impl<P: Plugin> Control for Rc<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }
    fn new_filter(&self) -> Box<dyn HttpFilter> {
        Box::new(P::new_filter(self))
    }
    fn check_host(&self, kind: HostKind) -> Result<(), ConfigError> {
        P::check_host(self, kind)
    }
    fn tick_period_ms(&self) -> Option<u64> {
        P::tick_period_ms(self)
    }
    fn on_tick(&self, host: &mut dyn Host) {
        P::on_tick(self, host);
    }
    fn on_call_response(&self, host: &mut dyn Host, response: CallResponse) {
        P::on_call_response(self, host, response);
    }
    fn holds_request_headers(&self) -> bool {
        P::holds_request_headers(self)
    }
    fn holds_response_headers(&self) -> bool {
        P::holds_response_headers(self)
    }
    fn audit_mode(&self) -> AuditMode {
        P::audit_mode(self)
    }
}

/// Configures a control from its JSON config, type erased.
pub fn configure<P: Plugin>(
    config: &[u8],
    host: &mut dyn Host,
) -> Result<Rc<dyn Control>, ConfigError> {
    Ok(Rc::new(Rc::new(P::configure(config, host)?)))
}

/// Exports a [`Plugin`] as the module's proxy-wasm entry point
/// (wasm32-wasip1 only, and only with the calling crate's `export` feature:
/// the one-VM module links every control and exports its own chain).
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(all(target_os = "wasi", feature = "export"))]
        $crate::proxy_wasm::main! {{
            $crate::glue::start::<$plugin>();
        }}
    };
}
