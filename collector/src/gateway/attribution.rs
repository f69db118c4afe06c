//! Which process is on the other end of a loopback connection.
//!
//! The client's socket is the one whose local address is the connection's
//! peer and whose remote address is the gateway: `/proc/net/tcp{,6}` gives
//! its inode, and the process holding an fd `socket:[inode]` is the caller.
//! Both ends are in this network namespace (the gateway is on loopback).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// The pid holding the client end of the connection `peer` → `local`.
pub fn peer_pid(proc_root: &Path, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let inode = socket_inode(proc_root, peer, local)?;
    pid_with_socket(proc_root, inode)
}

fn socket_inode(proc_root: &Path, peer: SocketAddr, local: SocketAddr) -> Option<u64> {
    for table in ["net/tcp", "net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(proc_root.join(table)) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            if parse_addr(f[1]) == Some(peer) && parse_addr(f[2]) == Some(local) {
                let inode = f[9].parse().ok()?;
                // 0: a socket in TIME_WAIT, no longer anyone's
                return (inode != 0).then_some(inode);
            }
        }
    }
    None
}

/// `0100007F:1F90` (IPv4) or 32 hex digits (IPv6), each 32-bit word in host
/// byte order; IPv4-mapped IPv6 addresses come back as IPv4.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.to_ne_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
        _ => return None,
    };
    Some(SocketAddr::new(normalise(ip), port))
}

fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Normalise an address as the kernel tables show it (IPv4-mapped → IPv4).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(normalise(addr.ip()), addr.port())
}

/// The process with an fd on socket `inode`; newest pids first, since the
/// caller usually started recently.
fn pid_with_socket(proc_root: &Path, inode: u64) -> Option<u32> {
    let target = format!("socket:[{inode}]");
    let mut pids: Vec<u32> = std::fs::read_dir(proc_root)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable_by(|a, b| b.cmp(a));
    let me = std::process::id();
    for pid in pids {
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_address_format() {
        assert_eq!(
            parse_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_addr("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
        // ::ffff:127.0.0.1
        assert_eq!(
            parse_addr("0000000000000000FFFF00000100007F:0050"),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(parse_addr("zz:1"), None);
    }

    #[test]
    fn finds_this_process_on_a_loopback_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        let inode = socket_inode(Path::new("/proc"), peer, listener.local_addr().unwrap());
        assert!(inode.is_some());
        // the client end is ours; pid_with_socket skips our own pid, so look it up directly
        let target = format!("socket:[{}]", inode.unwrap());
        let found = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str())
            });
        assert!(found);
        drop(client);
    }
}
