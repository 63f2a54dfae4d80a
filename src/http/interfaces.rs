//! `network` in `/status`: the host's network interfaces, in the shape rqlite reports them
//! (Go's `net.Interfaces`): per interface its flags, hardware address and addresses in CIDR
//! notation.

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::SockaddrStorage;

use super::json::Json;

struct Interface {
    flags: InterfaceFlags,
    hardware: Option<Vec<u8>>,
    addresses: Vec<String>,
}

/// `{"interfaces": {name: {flags, hardware_address, addresses}}}`, names sorted (rqlite's
/// come from a Go map); an error when the host cannot list them.
pub(super) fn network() -> Json {
    let list = match getifaddrs() {
        Ok(l) => l,
        Err(e) => return Json::Obj(vec![("error".into(), Json::Str(e.to_string()))]),
    };
    let mut by_name: std::collections::BTreeMap<String, Interface> = Default::default();
    for a in list {
        let i = by_name
            .entry(a.interface_name)
            .or_insert_with(|| Interface {
                flags: InterfaceFlags::empty(),
                hardware: None,
                addresses: Vec::new(),
            });
        i.flags |= a.flags;
        let Some(addr) = a.address else { continue };
        if let Some(link) = addr.as_link_addr() {
            // nix reads six bytes whatever the address's length (`halen`) is.
            let len = link.halen().min(6);
            i.hardware = link
                .addr()
                .map(|m| m[..len].to_vec())
                .filter(|m| m.iter().any(|b| *b != 0));
        } else if let Some(ip) = cidr(&addr, a.netmask.as_ref()) {
            i.addresses.push(ip);
        }
    }
    let interfaces = by_name
        .into_iter()
        .map(|(name, i)| {
            let addresses = if i.addresses.is_empty() {
                Json::Null
            } else {
                Json::Arr(
                    i.addresses
                        .into_iter()
                        .map(|a| Json::Obj(vec![("address".into(), Json::Str(a))]))
                        .collect(),
                )
            };
            let hardware = i.hardware.map_or(String::new(), |m| {
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            });
            (
                name,
                Json::Obj(vec![
                    ("addresses".into(), addresses),
                    ("flags".into(), Json::Str(flags(i.flags))),
                    ("hardware_address".into(), Json::Str(hardware)),
                ]),
            )
        })
        .collect();
    Json::Obj(vec![("interfaces".into(), Json::Obj(interfaces))])
}

/// `address/prefix`, the prefix counted from the netmask.
fn cidr(addr: &SockaddrStorage, mask: Option<&SockaddrStorage>) -> Option<String> {
    let ones = |bytes: &[u8]| bytes.iter().map(|b| b.count_ones()).sum::<u32>();
    if let Some(v4) = addr.as_sockaddr_in() {
        let prefix = mask
            .and_then(|m| m.as_sockaddr_in())
            .map_or(32, |m| ones(&m.ip().octets()));
        return Some(format!("{}/{prefix}", v4.ip()));
    }
    let v6 = addr.as_sockaddr_in6()?;
    let prefix = mask
        .and_then(|m| m.as_sockaddr_in6())
        .map_or(128, |m| ones(&m.ip().octets()));
    Some(format!("{}/{prefix}", v6.ip()))
}

/// Go's `net.Flags.String()`: the names it knows, in its order, joined by `|`.
fn flags(f: InterfaceFlags) -> String {
    [
        (InterfaceFlags::IFF_UP, "up"),
        (InterfaceFlags::IFF_BROADCAST, "broadcast"),
        (InterfaceFlags::IFF_LOOPBACK, "loopback"),
        (InterfaceFlags::IFF_POINTOPOINT, "pointtopoint"),
        (InterfaceFlags::IFF_MULTICAST, "multicast"),
        (InterfaceFlags::IFF_RUNNING, "running"),
    ]
    .into_iter()
    .filter(|(flag, _)| f.contains(*flag))
    .map(|(_, name)| name)
    .collect::<Vec<_>>()
    .join("|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_as_go_lists_it() {
        let Json::Obj(top) = network() else {
            panic!("not an object")
        };
        let Json::Obj(ifaces) = &top[0].1 else {
            panic!("no interfaces: {top:?}")
        };
        let (_, lo) = ifaces
            .iter()
            .find(|(n, _)| n == "lo")
            .expect("the loopback interface");
        let text = lo.to_compact();
        assert!(text.contains(r#""hardware_address":"""#), "{text}");
        // A fresh network namespace has `lo` down and without addresses.
        if text.contains(r#""flags":"up|loopback|running""#) {
            assert!(text.contains(r#"{"address":"127.0.0.1/8"}"#), "{text}");
        } else {
            assert!(text.contains(r#""flags":"loopback""#), "{text}");
        }
    }

    #[test]
    fn flags_follow_gos_order() {
        let f =
            InterfaceFlags::IFF_RUNNING | InterfaceFlags::IFF_UP | InterfaceFlags::IFF_MULTICAST;
        assert_eq!(flags(f), "up|multicast|running");
        assert_eq!(flags(InterfaceFlags::empty()), "");
    }
}
