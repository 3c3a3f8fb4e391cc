//! Runs an exchange through a filter and answers the calls it pauses for,
//! as the host would deliver them, so paused requests go on to the end.

use palisade_core::fake::{end_stream, run, Exchange, FakeHost, Outcome, RecordedCall};
use palisade_core::host::{CallResponse, Host};
use palisade_core::{Flow, HttpFilter};

/// How the harness answers one call.
#[derive(Debug, Clone)]
pub enum Answer {
    /// The host delivers this response.
    Respond(CallResponse),
    /// The client leaves first: the stream ends with the call pending.
    Reset,
}

/// Most calls one exchange may wait on in turn (a chain: keys, then RLS).
const MAX_ROUNDS: usize = 4;

/// [`run`], answering every call the request pauses for with `answer`.
pub fn drive(
    filter: &mut dyn HttpFilter,
    host: &mut FakeHost,
    ex: &Exchange,
    answer: &mut dyn FnMut(&RecordedCall) -> Answer,
) -> Outcome {
    let mut out = run(filter, host, ex);
    let mut rounds = 0;
    while out.awaiting_call {
        let Some(call) = host.calls.last().cloned() else {
            break;
        };
        let response = match answer(&call) {
            Answer::Respond(r) if rounds < MAX_ROUNDS => r,
            _ => {
                end_stream(filter, host);
                break;
            }
        };
        rounds += 1;
        let mut resumed = Resume {
            inner: &mut *filter,
            answer: Some(response),
        };
        out = run(&mut resumed, host, ex);
        if !out.awaiting_call {
            break;
        }
    }
    out
}

/// Replays a paused exchange from the answer on: its request-headers
/// callback delivers the answer; every later callback is the filter's own.
struct Resume<'a> {
    inner: &'a mut dyn HttpFilter,
    answer: Option<CallResponse>,
}

impl HttpFilter for Resume<'_> {
    fn on_request_headers(&mut self, host: &mut dyn Host, _end_of_stream: bool) -> Flow {
        match self.answer.take() {
            Some(answer) => self.inner.on_call_response(host, answer),
            None => Flow::Continue,
        }
    }
    fn on_request_body(&mut self, host: &mut dyn Host, size: usize, eos: bool) -> Flow {
        self.inner.on_request_body(host, size, eos)
    }
    fn on_request_trailers(&mut self, host: &mut dyn Host) -> Flow {
        self.inner.on_request_trailers(host)
    }
    fn on_response_headers(&mut self, host: &mut dyn Host, eos: bool) -> Flow {
        self.inner.on_response_headers(host, eos)
    }
    fn on_response_body(&mut self, host: &mut dyn Host, size: usize, eos: bool) -> Flow {
        self.inner.on_response_body(host, size, eos)
    }
    fn on_response_trailers(&mut self, host: &mut dyn Host) -> Flow {
        self.inner.on_response_trailers(host)
    }
    fn on_call_response(&mut self, host: &mut dyn Host, response: CallResponse) -> Flow {
        self.inner.on_call_response(host, response)
    }
    fn on_stream_done(&mut self, host: &mut dyn Host) {
        self.inner.on_stream_done(host);
    }
}
