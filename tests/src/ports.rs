//! Loopback ports for tests running in parallel.
//!
//! Envoy's own listener and admin ports are not picked here: Envoy binds port 0 and the
//! harness reads the real ports back, which cannot race. These helpers are for the
//! other ends a test needs.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Mutex, OnceLock};

use socket2::{Domain, Protocol, Socket, Type};

/// A free loopback port right now (bind 127.0.0.1:0, read the port, release it).
///
/// Never returns the same port twice in one process, but another process may still take
/// it before it is used: prefer holding a bound socket where possible.
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(Default::default);
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if handed_out.lock().expect("port set").insert(port) {
            return port;
        }
    }
}

/// A loopback port that is bound but not listening, held for as long as this value lives:
/// connecting to it is refused at once (an upstream "connection refused" for Envoy's own
/// 503), and no other socket can take the port meanwhile.
#[derive(Debug)]
pub struct ClosedPort {
    _socket: Socket,
    port: u16,
}

impl ClosedPort {
    /// Reserves a port.
    pub fn reserve() -> ClosedPort {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
            .expect("create a TCP socket");
        socket
            .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .expect("bind 127.0.0.1:0");
        let port = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("bound socket has an address")
            .port();
        ClosedPort {
            _socket: socket,
            port,
        }
    }

    /// The reserved port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// A loopback listener that completes TCP handshakes but never reads or answers, for an
/// upstream that hangs (provokes Envoy's route timeout, 504).
#[derive(Debug)]
pub struct BlackHole {
    listener: TcpListener,
}

impl BlackHole {
    /// Starts listening on a fresh loopback port.
    pub fn start() -> BlackHole {
        BlackHole {
            listener: TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0"),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().expect("listener address").port()
    }
}
