//! Loopback TCP connections by 4-tuple → the process that made them, from
//! the kernel's connect records: how the gateway link tells which process is
//! on the other end of a connection to a local service, without /proc.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

/// Connections remembered; the oldest are forgotten first. A caller asks
/// within milliseconds of connecting, so only the newest matter.
const REMEMBERED: usize = 16_384;

#[derive(Default)]
pub struct Connections {
    by_tuple: HashMap<(SocketAddr, SocketAddr), u32>,
    order: VecDeque<(SocketAddr, SocketAddr)>,
}

impl Connections {
    /// `tgid` connected from `src` to `dst` (only loopback destinations are kept).
    pub fn connected(&mut self, src: SocketAddr, dst: SocketAddr, tgid: u32) {
        if !dst.ip().is_loopback() || src.port() == 0 {
            return;
        }
        if self.by_tuple.insert((src, dst), tgid).is_none() {
            self.order.push_back((src, dst));
        }
        while self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.by_tuple.remove(&old);
            }
        }
    }

    /// The process that connected from `src` to `dst`.
    pub fn owner(&self, src: SocketAddr, dst: SocketAddr) -> Option<u32> {
        self.by_tuple.get(&(src, dst)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_loopback_connects_and_forgets_the_oldest() {
        let mut c = Connections::default();
        let gw: SocketAddr = "127.0.0.1:8480".parse().unwrap();
        let from = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        c.connected(from(40000), gw, 42);
        assert_eq!(c.owner(from(40000), gw), Some(42));
        // not loopback: not kept
        c.connected(from(40001), "10.0.0.1:443".parse().unwrap(), 7);
        assert_eq!(c.owner(from(40001), "10.0.0.1:443".parse().unwrap()), None);
        for p in 0..REMEMBERED as u16 {
            c.connected(from(1 + p), "127.0.0.1:9".parse().unwrap(), 1);
        }
        assert_eq!(c.owner(from(40000), gw), None);
        assert_eq!(c.by_tuple.len(), REMEMBERED);
    }
}
