//! The worker's own address: the one the server, the gateway and other workers reach it and its
//! engines at (what `{{worker_ip}}` renders to), and the interface that carries it (GPUStack's
//! `advertise_address` and `worker_ifname`), the interface that carries it, and where the worker's
//! own API listens (that address, not every interface). The choices are pure functions of the
//! machine's interfaces; reading them is the only IO here.

use std::net::{IpAddr, Ipv4Addr};

/// One address of one network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddr {
    pub name: String,
    pub ip: IpAddr,
}

/// The address a worker advertises and the interface that has it (empty when unknown, e.g. a
/// host name or an address behind NAT given with `--advertise-address`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    pub address: String,
    pub ifname: String,
}

/// Chooses the advertised address: `--advertise-address` as given; else the first IPv4 (then
/// IPv6) address of `--ifname`; else the address of the default route; else loopback.
pub fn choose(
    advertise: Option<&str>,
    ifname: Option<&str>,
    interfaces: &[InterfaceAddr],
    default_route: Option<IpAddr>,
) -> Result<Advertised, String> {
    let owner = |ip: &str| {
        let ip: Option<IpAddr> = ip.parse().ok();
        interfaces.iter().find(|i| Some(i.ip) == ip).map(|i| i.name.clone()).unwrap_or_default()
    };
    if let Some(address) = advertise.map(str::trim).filter(|a| !a.is_empty()) {
        return Ok(Advertised { address: address.to_owned(), ifname: owner(address) });
    }
    if let Some(name) = ifname.map(str::trim).filter(|n| !n.is_empty()) {
        let mut own: Vec<&InterfaceAddr> = interfaces.iter().filter(|i| i.name == name).collect();
        own.sort_by_key(|i| (i.ip.is_ipv6(), matches!(i.ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)));
        return match own.first() {
            Some(i) => Ok(Advertised { address: i.ip.to_string(), ifname: name.to_owned() }),
            None => {
                let mut names: Vec<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
                names.dedup();
                Err(format!("--ifname {name:?}: no such interface with an address (have: {})", names.join(", ")))
            }
        };
    }
    // No default route (an air-gapped cluster): the first address others can reach, IPv4 first;
    // loopback only on a machine that has nothing else.
    let usable = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => !v6.is_loopback() && v6.segments()[0] & 0xffc0 != 0xfe80 && !v6.is_unspecified(),
    };
    let fallback = interfaces.iter().filter(|i| usable(&i.ip)).min_by_key(|i| i.ip.is_ipv6()).map(|i| i.ip);
    match default_route.or(fallback) {
        Some(ip) => Ok(Advertised { address: ip.to_string(), ifname: owner(&ip.to_string()) }),
        None => Ok(Advertised { address: "127.0.0.1".into(), ifname: owner("127.0.0.1") }),
    }
}

/// Where the worker's API listens: `--bind-address` as given; else the advertised address when this
/// machine has it (an interface carries it), so the API is not open on networks the worker was not
/// told to use; else every IPv4 address (a host name, or an address behind NAT that no interface
/// has, can only be reached that way). An IPv6 link-local address cannot be bound without its
/// scope, so it also means every address.
pub fn listen_address(bind: Option<IpAddr>, advertised: &Advertised) -> IpAddr {
    let every = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    if let Some(ip) = bind {
        return ip;
    }
    if advertised.ifname.is_empty() {
        return every;
    }
    match advertised.address.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) if v6.segments()[0] & 0xffc0 == 0xfe80 => every,
        Ok(ip) => ip,
        Err(_) => every,
    }
}

/// The machine's interface addresses.
pub fn interfaces() -> Vec<InterfaceAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    addrs
        .filter_map(|a| {
            let storage = a.address?;
            let ip = match (storage.as_sockaddr_in(), storage.as_sockaddr_in6()) {
                (Some(v4), _) => IpAddr::V4(v4.ip()),
                (_, Some(v6)) => IpAddr::V6(v6.ip()),
                _ => return None,
            };
            Some(InterfaceAddr { name: a.interface_name, ip })
        })
        .collect()
}

/// The local address of the route outwards (no packet is sent), if there is one.
pub fn default_route_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("10.255.255.255:1").ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// Resolves the advertised address on this machine.
pub fn resolve(advertise: Option<&str>, ifname: Option<&str>) -> Result<Advertised, String> {
    choose(advertise, ifname, &interfaces(), default_route_address())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, ip: &str) -> InterfaceAddr {
        InterfaceAddr { name: name.into(), ip: ip.parse().unwrap() }
    }

    /// --advertise-address, --ifname, default route, wanted (address, interface) or error prefix.
    type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<IpAddr>, Result<(&'a str, &'a str), &'a str>);

    #[test]
    fn advertised_address_rules() {
        let ifs = [
            iface("lo", "127.0.0.1"),
            iface("eth0", "fe80::1"),
            iface("eth0", "198.18.7.2"),
            iface("ib0", "10.9.0.4"),
            iface("v6only", "fd00::4"),
        ];
        let route: Option<IpAddr> = Some("198.18.7.2".parse().unwrap());
        let cases: &[Case<'_>] = &[
            (None, None, route, Ok(("198.18.7.2", "eth0"))),
            (None, None, None, Ok(("198.18.7.2", "eth0"))),
            (None, Some("ib0"), route, Ok(("10.9.0.4", "ib0"))),
            (None, Some("eth0"), None, Ok(("198.18.7.2", "eth0"))),
            (None, Some("v6only"), route, Ok(("fd00::4", "v6only"))),
            (Some("10.9.0.4"), Some("eth0"), route, Ok(("10.9.0.4", "ib0"))),
            (Some("gpu-7.example.com"), None, route, Ok(("gpu-7.example.com", ""))),
            (Some("  "), None, route, Ok(("198.18.7.2", "eth0"))),
            (None, Some("wlan9"), route, Err("--ifname \"wlan9\": no such interface")),
        ];
        let only_lo = [iface("lo", "127.0.0.1"), iface("eth0", "fe80::1")];
        let alone = choose(None, None, &only_lo, None).unwrap();
        assert_eq!((alone.address.as_str(), alone.ifname.as_str()), ("127.0.0.1", "lo"));
        for (advertise, ifname, route, want) in cases {
            let got = choose(*advertise, *ifname, &ifs, *route);
            match (got, want) {
                (Ok(a), Ok((address, name))) => assert_eq!((a.address.as_str(), a.ifname.as_str()), (*address, *name)),
                (Err(e), Err(prefix)) => assert!(e.starts_with(prefix), "{e}"),
                (got, want) => panic!("{advertise:?} {ifname:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_api_listens_on_the_advertised_address_unless_told_otherwise() {
        let adv = |address: &str, ifname: &str| Advertised { address: address.into(), ifname: ifname.into() };
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        // --bind-address, advertised (address, interface that has it), wanted listen address.
        let cases: &[(Option<&str>, (&str, &str), &str)] = &[
            (None, ("127.0.0.1", "lo"), "127.0.0.1"),
            (None, ("198.18.7.2", "eth0"), "198.18.7.2"),
            (None, ("fd00::4", "v6only"), "fd00::4"),
            // No interface has it: a host name, an address behind NAT.
            (None, ("gpu-7.example.com", ""), "0.0.0.0"),
            (None, ("203.0.113.9", ""), "0.0.0.0"),
            (None, ("fe80::1", "eth0"), "0.0.0.0"),
            (Some("0.0.0.0"), ("198.18.7.2", "eth0"), "0.0.0.0"),
            (Some("10.9.0.4"), ("198.18.7.2", "eth0"), "10.9.0.4"),
            (Some("::"), ("gpu-7.example.com", ""), "::"),
        ];
        for (bind, (address, ifname), want) in cases {
            let got = listen_address(bind.map(ip), &adv(address, ifname));
            assert_eq!(got, ip(want), "--bind-address {bind:?}, advertised {address} on {ifname:?}");
        }
    }

    #[test]
    fn this_machine_has_loopback() {
        assert!(interfaces().iter().any(|i| i.ip.is_loopback()), "{:?}", interfaces());
    }
}
