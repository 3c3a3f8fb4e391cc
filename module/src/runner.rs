//! One stream through a route's controls, inside one filter.
//!
//! Envoy's filter manager, in small: the request goes through the route's
//! controls in order and the response in reverse order. A control that
//! returns Pause stops the ones after it until it lets go (the answer to
//! its call, or the body it held the headers for); those then get what the
//! stream has seen so far (headers, then any buffered body and trailers),
//! as separate filters would once the stopped one continued. A local reply
//! ends the request path; the host then sends that reply through the
//! response path, where every control sees it, as separate filters would.
//!
//! Bodies: each call of a body callback hands the controls the whole
//! buffered body (the host re-delivers it cumulatively after a Pause). Only
//! one control per direction reads bodies (`schema` requests, `errors`
//! responses), and the others let bodies pass, so seeing a chunk again
//! changes nothing for them.

use crate::host::{ChainHost, Memory};
use palisade_core::host::CallResponse;
use palisade_core::{Flow, Host, HttpFilter};
use std::rc::Rc;

/// Where the request path stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stop {
    at: usize,
    /// Waiting for a call's answer (else for the body).
    call: bool,
}

/// The controls of one route, for one stream.
pub struct Stream {
    filters: Vec<Box<dyn HttpFilter>>,
    /// Each control's name, for [`Stream::holder`].
    names: Rc<[&'static str]>,
    /// What the controls leave for each other (see [`crate::host`]).
    memory: Memory,
    publish: bool,
    /// A control of the route asks for `audit: all`.
    audit_all: bool,
    /// Controls `0..entered` let the request headers through.
    entered: usize,
    stop: Option<Stop>,
    headers_eos: bool,
    /// The buffered request body as last seen: size and end of stream.
    body: Option<(usize, bool)>,
    trailers: bool,
    /// Controls `n - resp_entered..n` let the response headers through.
    resp_entered: usize,
    resp_stop: Option<usize>,
    resp_eos: bool,
    resp_body: Option<(usize, bool)>,
    resp_trailers: bool,
}

/// Stops the path when a control answered itself or paused.
macro_rules! step {
    ($host:expr, $flow:expr) => {{
        let flow = $flow;
        if $host.local_reply_sent() {
            return Flow::Pause;
        }
        flow
    }};
}

impl Stream {
    /// `memory` may already hold what choosing the route read (the route name).
    pub fn new(
        filters: Vec<Box<dyn HttpFilter>>,
        names: Rc<[&'static str]>,
        publish: bool,
        memory: Memory,
        audit_all: bool,
    ) -> Stream {
        Stream {
            filters,
            names,
            memory,
            publish,
            audit_all,
            entered: 0,
            stop: None,
            headers_eos: false,
            body: None,
            trailers: false,
            resp_entered: 0,
            resp_stop: None,
            resp_eos: false,
            resp_body: None,
            resp_trailers: false,
        }
    }

    fn len(&self) -> usize {
        self.filters.len()
    }

    /// The control the stream waits on: the response's, else the request's.
    pub fn holder(&self) -> Option<&'static str> {
        let at = self.resp_stop.or(self.stop.map(|s| s.at))?;
        self.names.get(at).copied()
    }

    /// Runs one control's callback against the chain's view of the host.
    fn call(
        &mut self,
        host: &mut dyn Host,
        i: usize,
        callback: impl FnOnce(&mut dyn HttpFilter, &mut dyn Host) -> Flow,
    ) -> Flow {
        let mut view = ChainHost {
            inner: host,
            memory: &mut self.memory,
            publish: self.publish,
        };
        callback(self.filters[i].as_mut(), &mut view)
    }

    /// Lets the request headers into the controls after the last one that
    /// passed them, replaying body and trailers already seen, until one
    /// stops the path.
    fn advance(&mut self, host: &mut dyn Host) -> Flow {
        while self.stop.is_none() && self.entered < self.len() {
            let i = self.entered;
            let calls = host.calls_dispatched();
            let eos = self.headers_eos;
            if step!(
                host,
                self.call(host, i, |f, h| f.on_request_headers(h, eos))
            ) == Flow::Pause
            {
                self.stop = Some(Stop {
                    at: i,
                    call: host.calls_dispatched() > calls,
                });
                return Flow::Pause;
            }
            self.entered = i + 1;
            if self.replay(host, i) == Flow::Pause {
                return Flow::Pause;
            }
        }
        match self.stop {
            Some(_) => Flow::Pause,
            None => Flow::Continue,
        }
    }

    /// Gives control `i` the body and trailers the stream already had.
    fn replay(&mut self, host: &mut dyn Host, i: usize) -> Flow {
        if let Some((size, eos)) = self.body {
            if step!(
                host,
                self.call(host, i, |f, h| f.on_request_body(h, size, eos))
            ) == Flow::Pause
            {
                return Flow::Pause;
            }
        }
        if self.trailers
            && step!(host, self.call(host, i, |f, h| f.on_request_trailers(h))) == Flow::Pause
        {
            return Flow::Pause;
        }
        Flow::Continue
    }

    pub fn on_request_headers(&mut self, host: &mut dyn Host, eos: bool) -> Flow {
        self.headers_eos = eos;
        self.advance(host)
    }

    pub fn on_request_body(&mut self, host: &mut dyn Host, size: usize, eos: bool) -> Flow {
        self.body = Some((size, eos));
        for i in 0..self.entered {
            if step!(
                host,
                self.call(host, i, |f, h| f.on_request_body(h, size, eos))
            ) == Flow::Pause
            {
                return Flow::Pause;
            }
        }
        match self.stop {
            // Held for the body: it decides now.
            Some(Stop { at, call: false }) => {
                if step!(
                    host,
                    self.call(host, at, |f, h| f.on_request_body(h, size, eos))
                ) == Flow::Pause
                {
                    return Flow::Pause;
                }
                self.release(at);
                self.advance(host)
            }
            // The body waits with the request for the call's answer.
            Some(Stop { call: true, .. }) => Flow::Pause,
            None => Flow::Continue,
        }
    }

    pub fn on_request_trailers(&mut self, host: &mut dyn Host) -> Flow {
        self.trailers = true;
        for i in 0..self.entered {
            if step!(host, self.call(host, i, |f, h| f.on_request_trailers(h))) == Flow::Pause {
                return Flow::Pause;
            }
        }
        match self.stop {
            Some(Stop { at, call: false }) => {
                if step!(host, self.call(host, at, |f, h| f.on_request_trailers(h))) == Flow::Pause
                {
                    return Flow::Pause;
                }
                self.release(at);
                self.advance(host)
            }
            Some(Stop { call: true, .. }) => Flow::Pause,
            None => Flow::Continue,
        }
    }

    fn release(&mut self, at: usize) {
        self.stop = None;
        self.entered = at + 1;
    }

    /// The answer goes to the control waiting for it; when it lets go, it
    /// gets what arrived meanwhile and the rest of the chain runs.
    pub fn on_call_response(&mut self, host: &mut dyn Host, response: CallResponse) -> Flow {
        let Some(Stop { at, call: true }) = self.stop else {
            // Nobody waits (a stale answer): nothing to resume.
            return Flow::Pause;
        };
        let calls = host.calls_dispatched();
        if step!(
            host,
            self.call(host, at, |f, h| f.on_call_response(h, response))
        ) == Flow::Pause
        {
            // Another call, or held for the body now.
            self.stop = Some(Stop {
                at,
                call: host.calls_dispatched() > calls,
            });
            return Flow::Pause;
        }
        self.release(at);
        if self.replay(host, at) == Flow::Pause {
            return Flow::Pause;
        }
        self.advance(host)
    }

    /// Index of the `k`-th control on the response path (last first).
    fn resp_index(&self, k: usize) -> usize {
        self.len() - 1 - k
    }

    fn resp_advance(&mut self, host: &mut dyn Host) -> Flow {
        while self.resp_stop.is_none() && self.resp_entered < self.len() {
            let i = self.resp_index(self.resp_entered);
            let eos = self.resp_eos;
            if step!(
                host,
                self.call(host, i, |f, h| f.on_response_headers(h, eos))
            ) == Flow::Pause
            {
                self.resp_stop = Some(i);
                return Flow::Pause;
            }
            self.resp_entered += 1;
            if let Some((size, eos)) = self.resp_body {
                if step!(
                    host,
                    self.call(host, i, |f, h| f.on_response_body(h, size, eos))
                ) == Flow::Pause
                {
                    return Flow::Pause;
                }
            }
            if self.resp_trailers
                && step!(host, self.call(host, i, |f, h| f.on_response_trailers(h))) == Flow::Pause
            {
                return Flow::Pause;
            }
        }
        match self.resp_stop {
            Some(_) => Flow::Pause,
            None => Flow::Continue,
        }
    }

    /// Every response starts the path afresh: a local reply replacing the
    /// upstream's answer comes through here again.
    pub fn on_response_headers(&mut self, host: &mut dyn Host, eos: bool) -> Flow {
        self.resp_entered = 0;
        self.resp_stop = None;
        self.resp_body = None;
        self.resp_trailers = false;
        self.resp_eos = eos;
        self.resp_advance(host)
    }

    pub fn on_response_body(&mut self, host: &mut dyn Host, size: usize, eos: bool) -> Flow {
        self.resp_body = Some((size, eos));
        for k in 0..self.resp_entered {
            let i = self.resp_index(k);
            if step!(
                host,
                self.call(host, i, |f, h| f.on_response_body(h, size, eos))
            ) == Flow::Pause
            {
                return Flow::Pause;
            }
        }
        match self.resp_stop {
            Some(at) => {
                if step!(
                    host,
                    self.call(host, at, |f, h| f.on_response_body(h, size, eos))
                ) == Flow::Pause
                {
                    return Flow::Pause;
                }
                self.resp_stop = None;
                self.resp_entered += 1;
                self.resp_advance(host)
            }
            None => Flow::Continue,
        }
    }

    pub fn on_response_trailers(&mut self, host: &mut dyn Host) -> Flow {
        self.resp_trailers = true;
        for k in 0..self.resp_entered {
            let i = self.resp_index(k);
            if step!(host, self.call(host, i, |f, h| f.on_response_trailers(h))) == Flow::Pause {
                return Flow::Pause;
            }
        }
        match self.resp_stop {
            Some(at) => {
                if step!(host, self.call(host, at, |f, h| f.on_response_trailers(h))) == Flow::Pause
                {
                    return Flow::Pause;
                }
                self.resp_stop = None;
                self.resp_entered += 1;
                self.resp_advance(host)
            }
            None => Flow::Continue,
        }
    }

    /// Every control hears that the stream ended, whether or not the
    /// request reached it: one that never ran has nothing to release.
    pub fn on_stream_done(&mut self, host: &mut dyn Host) {
        for i in 0..self.len() {
            let mut view = ChainHost {
                inner: &mut *host,
                memory: &mut self.memory,
                publish: self.publish,
            };
            self.filters[i].on_stream_done(&mut view);
        }
        self.flush_audit(host);
        // From the proxy, not memory: a module after this one (Envoy's
        // filter state) may have added to the record since.
        if self.audit_all {
            palisade_core::audit::finish(host, &self.names);
        }
    }

    /// Sends the audit record to the proxy if a control changed it.
    pub fn flush_audit(&mut self, host: &mut dyn Host) {
        self.memory.flush_audit(host);
    }
}
