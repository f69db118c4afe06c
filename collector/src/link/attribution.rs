//! Which process is on the other end of a loopback connection.
//!
//! The client's socket is the one whose local address is the connection's
//! peer and whose remote address is the gateway. The kernel finds it by that
//! 4-tuple through the sock_diag netlink interface (what `ss` uses; one hash
//! lookup, where reading `/proc/net/tcp` walks every socket and took 2 ms
//! here), which gives its inode and owner; the process holding an fd
//! `socket:[inode]` is the caller, searched among that owner's processes
//! first. `/proc/net/tcp{,6}` is the fallback. Both ends are in this network
//! namespace (the gateway is on loopback).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// The pid holding the client end of the connection `peer` → `local`.
pub fn peer_pid(proc_root: &Path, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let (inode, uid) = client_socket(proc_root, peer, local)?;
    pid_with_socket(proc_root, inode, uid)
}

/// Whether `pid` holds the client end of `peer` → `local` now: what the
/// kernel's connect record said may be stale (the socket closed, its port
/// reused by another process, the pid reused).
pub fn holds(proc_root: &Path, pid: u32, peer: SocketAddr, local: SocketAddr) -> bool {
    holds_within(proc_root, pid, peer, local, usize::MAX) == Some(true)
}

/// [`holds`], giving up (`None`) past `max_fds` open files of `pid`: for a
/// thread that may do a short check itself but must not walk a huge table.
pub fn holds_within(
    proc_root: &Path,
    pid: u32,
    peer: SocketAddr,
    local: SocketAddr,
    max_fds: usize,
) -> Option<bool> {
    // bounded means sock_diag only: the /proc/net/tcp fallback reads every
    // socket of the host, which local users can make many
    let inode = if max_fds == usize::MAX {
        client_socket(proc_root, peer, local).map(|(inode, _)| inode)
    } else {
        match sock_diag::find(peer, local) {
            Ok(found) => found.map(|f| f.inode).filter(|i| *i != 0),
            Err(_) => return None,
        }
    };
    let Some(inode) = inode else {
        return Some(false);
    };
    fd_on_within(proc_root, pid, &format!("socket:[{inode}]"), max_fds)
}

/// The client socket's inode (never 0: an orphaned socket in FIN_WAIT or
/// TIME_WAIT is no process's) and its owner's uid when known.
fn client_socket(
    proc_root: &Path,
    peer: SocketAddr,
    local: SocketAddr,
) -> Option<(u64, Option<u32>)> {
    let (inode, uid) = match sock_diag::find(peer, local) {
        Ok(Some(found)) => (found.inode, Some(found.uid)),
        Ok(None) => return None,
        Err(_) => (socket_inode(proc_root, peer, local)?, None),
    };
    (inode != 0).then_some((inode, uid))
}

fn has_fd_on(proc_root: &Path, pid: u32, target: &str) -> bool {
    fd_on_within(proc_root, pid, target, usize::MAX) == Some(true)
}

/// Whether `pid` has an fd linking to `target`; `None` when it has more
/// than `max_fds` and none of the first ones did.
fn fd_on_within(proc_root: &Path, pid: u32, target: &str, max_fds: usize) -> Option<bool> {
    let Ok(fds) = std::fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
        return Some(false);
    };
    for (seen, fd) in fds.flatten().enumerate() {
        if seen >= max_fds {
            return None;
        }
        if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target) {
            return Some(true);
        }
    }
    Some(false)
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

/// The process with an fd on socket `inode`: among the processes of the
/// socket's owner (`uid`, when known) first, newest pids first, since the
/// caller usually started recently.
fn pid_with_socket(proc_root: &Path, inode: u64, uid: Option<u32>) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let target = format!("socket:[{inode}]");
    let mut pids: Vec<u32> = std::fs::read_dir(proc_root)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable_by(|a, b| b.cmp(a));
    let me = std::process::id();
    let holds = |pid: u32| has_fd_on(proc_root, pid, &target);
    let owned = |pid: u32| {
        std::fs::metadata(proc_root.join(pid.to_string())).is_ok_and(|m| Some(m.uid()) == uid)
    };
    let candidates = pids.iter().copied().filter(|&p| p != me);
    if uid.is_some() {
        if let Some(pid) = candidates.clone().filter(|&p| owned(p)).find(|&p| holds(p)) {
            return Some(pid);
        }
    }
    // a process that changed its uid after opening the socket
    candidates
        .filter(|&p| uid.is_none() || !owned(p))
        .find(|&p| holds(p))
}

/// The kernel's socket lookup by 4-tuple (NETLINK_SOCK_DIAG, inet_diag).
mod sock_diag {
    use std::io;
    use std::net::{IpAddr, SocketAddr};

    pub struct Found {
        pub inode: u64,
        pub uid: u32,
    }

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 1;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_HDR: usize = 16;
    /// struct inet_diag_req_v2: family, protocol, ext, pad, states, sockid.
    const REQ: usize = 8 + SOCKID;
    /// struct inet_diag_sockid: sport, dport, src[16], dst[16], if, cookie[2].
    const SOCKID: usize = 48;
    /// struct inet_diag_msg: family, state, timer, retrans, sockid, expires,
    /// rqueue, wqueue, uid, inode.
    const MSG: usize = 4 + SOCKID + 20;

    fn sockid(buf: &mut [u8], src: SocketAddr, dst: SocketAddr) {
        buf[0..2].copy_from_slice(&src.port().to_be_bytes());
        buf[2..4].copy_from_slice(&dst.port().to_be_bytes());
        for (at, ip) in [(4, src.ip()), (20, dst.ip())] {
            match ip {
                IpAddr::V4(v4) => buf[at..at + 4].copy_from_slice(&v4.octets()),
                IpAddr::V6(v6) => buf[at..at + 16].copy_from_slice(&v6.octets()),
            }
        }
        // interface 0; cookie INET_DIAG_NOCOOKIE: match by addresses only
        buf[40..48].fill(0xff);
    }

    /// The socket whose local end is `src` and remote end `dst`.
    pub fn find(src: SocketAddr, dst: SocketAddr) -> io::Result<Option<Found>> {
        let family = if src.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let mut req = [0u8; NLMSG_HDR + REQ];
        req[0..4].copy_from_slice(&((NLMSG_HDR + REQ) as u32).to_ne_bytes());
        req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        req[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        let body = &mut req[NLMSG_HDR..];
        body[0] = family as u8;
        body[1] = libc::IPPROTO_TCP as u8;
        body[4..8].copy_from_slice(&u32::MAX.to_ne_bytes()); // every TCP state
        sockid(&mut body[8..8 + SOCKID], src, dst);

        // SAFETY: plain socket syscalls on an fd owned by this function and
        // closed by the OwnedFd; buffers are valid for the lengths passed.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor nothing else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let timeout = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: see above.
        let sent = unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
            libc::send(raw, req.as_ptr().cast(), req.len(), 0)
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 8192];
        // SAFETY: see above.
        let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        parse(&buf[..n as usize])
    }

    fn parse(reply: &[u8]) -> io::Result<Option<Found>> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "short sock_diag reply");
        let hdr = reply.get(..NLMSG_HDR).ok_or_else(bad)?;
        let kind = u16::from_ne_bytes([hdr[4], hdr[5]]);
        if kind == NLMSG_ERROR {
            let errno = reply
                .get(NLMSG_HDR..NLMSG_HDR + 4)
                .map(|e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]))
                .ok_or_else(bad)?;
            // ENOENT: no such socket (it closed); anything else: no sock_diag here
            return if errno == -libc::ENOENT {
                Ok(None)
            } else {
                Err(io::Error::from_raw_os_error(-errno))
            };
        }
        if kind != SOCK_DIAG_BY_FAMILY {
            return Err(bad());
        }
        let msg = reply.get(NLMSG_HDR..NLMSG_HDR + MSG).ok_or_else(bad)?;
        let word = |at: usize| u32::from_ne_bytes([msg[at], msg[at + 1], msg[at + 2], msg[at + 3]]);
        Ok(Some(Found {
            uid: word(MSG - 8),
            inode: u64::from(word(MSG - 4)),
        }))
    }
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
    fn sock_diag_finds_the_client_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(local).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        let found = sock_diag::find(peer, local)
            .unwrap()
            .expect("the client socket");
        assert_eq!(
            Some(found.inode),
            socket_inode(Path::new("/proc"), peer, local)
        );
        assert_eq!(found.uid, nix::unistd::getuid().as_raw());
        // a 4-tuple nobody uses
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(sock_diag::find(nobody, local).unwrap().is_none());
    }

    #[test]
    fn a_connect_record_is_believed_only_while_the_pid_holds_the_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(local).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        let proc_root = Path::new("/proc");
        assert!(holds(proc_root, std::process::id(), peer, local));
        // a check bounded below this process's open files gives up, never guesses
        let few = holds_within(proc_root, std::process::id(), peer, local, 0);
        assert_eq!(few, None);
        // another process does not hold it (pid 1: init)
        assert!(!holds(proc_root, 1, peer, local));
        // closed: the orphaned socket (inode 0) is no one's
        drop(client);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!holds(proc_root, std::process::id(), peer, local));
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
