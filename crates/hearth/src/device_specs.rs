//! The device specs of `hearth run` and `hearth restore`: `--drive path=..,ro`, `--net
//! tap=..|user,..`, `--vsock cid=..,uds=..`, `--balloon target_mib=..` and `--mac`, each
//! parsed into its `vmm::config` type with a one-line error naming the option and the spec.

use std::path::PathBuf;

use api::models::net::parse_mac;
use vmm::config::{
    BalloonConfig, DriveConfig, ForwardProtocol, NetBackend, NetConfig, NetLimit, PortForward, VsockConfig,
};

use crate::cli::CliError;

/// Parses `path=IMG[,ro][,direct][,id=ID][,bps=N][,iops=N]` (the `index`-th --drive).
pub(crate) fn parse_drive(spec: &str, index: usize) -> Result<DriveConfig, CliError> {
    let bad = |why: String| {
        CliError(format!(
            "--drive '{spec}': {why} (expected path=IMG[,ro][,direct][,id=ID][,bps=N][,iops=N])"
        ))
    };
    let (mut path, mut id, mut read_only, mut bps, mut iops) = (None, None, false, 0, 0);
    let mut direct = false;
    let rate = |v: &str| v.parse::<u64>().ok().filter(|&n| n > 0);
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("path", p)) if !p.is_empty() => path = Some(PathBuf::from(p)),
            Some(("id", i)) if !i.is_empty() && !i.contains(char::is_whitespace) => id = Some(i.to_string()),
            Some(("bps", v)) => bps = rate(v).ok_or_else(|| bad(format!("bps '{v}' is not a positive integer")))?,
            Some(("iops", v)) => iops = rate(v).ok_or_else(|| bad(format!("iops '{v}' is not a positive integer")))?,
            None if part == "ro" => read_only = true,
            None if part == "direct" => direct = true,
            _ => return Err(bad(format!("unknown or empty option '{part}'"))),
        }
    }
    let path = path.ok_or_else(|| bad("no path".into()))?;
    Ok(DriveConfig {
        id: id.unwrap_or_else(|| format!("drive{index}")),
        path,
        read_only,
        bps,
        iops,
        direct,
    })
}

/// Parses `tap=NAME[,mac=MAC]` or `user[,mac=MAC][,hostfwd=..]...` (--net).
pub(crate) fn parse_net(spec: &str) -> Result<NetConfig, CliError> {
    let bad = |why: String| {
        CliError(format!(
            "--net '{spec}': {why} (expected tap=NAME[,mac=02:xx:xx:xx:xx:xx] or \
             user[,mac=..][,hostfwd=tcp:[ADDR:]HOSTPORT-GUESTPORT]..., \
             and [,rx_bps=N][,rx_pps=N][,tx_bps=N][,tx_pps=N])"
        ))
    };
    let (mut tap, mut user, mut mac, mut forwards) = (None, false, None, Vec::new());
    let (mut rx_limit, mut tx_limit) = (NetLimit::default(), NetLimit::default());
    let rate = |k: &str, v: &str| {
        v.parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| bad(format!("{k} '{v}' is not a positive integer")))
    };
    for part in spec.split(',') {
        match part.split_once('=') {
            Some((k @ "rx_bps", v)) => rx_limit.bps = rate(k, v)?,
            Some((k @ "rx_pps", v)) => rx_limit.pps = rate(k, v)?,
            Some((k @ "tx_bps", v)) => tx_limit.bps = rate(k, v)?,
            Some((k @ "tx_pps", v)) => tx_limit.pps = rate(k, v)?,
            Some(("tap", t)) if !t.is_empty() && t.len() < 16 && !t.contains(['/', ' ']) => {
                tap = Some(t.to_string());
            }
            None if part == "user" => user = true,
            Some(("mac", m)) => {
                // The guest's own address must be unicast (low bit of the first byte clear).
                let parsed = parse_mac(m).filter(|b| b[0] & 1 == 0);
                mac = Some(parsed.ok_or_else(|| bad(format!("bad MAC '{m}' (want unicast aa:bb:cc:dd:ee:ff)")))?);
            }
            Some(("hostfwd", f)) => forwards.push(parse_hostfwd(f).ok_or_else(|| bad(format!("bad hostfwd '{f}'")))?),
            _ => return Err(bad(format!("unknown or invalid option '{part}'"))),
        }
    }
    let backend = match (tap, user) {
        (Some(t), false) if forwards.is_empty() => NetBackend::Tap(t),
        (Some(_), false) => return Err(bad("hostfwd needs user".into())),
        (None, true) => NetBackend::User { forwards },
        (Some(_), true) => return Err(bad("tap and user exclude each other".into())),
        (None, false) => return Err(bad("no tap=NAME or user".into())),
    };
    let name = match &backend {
        NetBackend::Tap(t) => t.as_str(),
        NetBackend::User { .. } => "user",
    };
    let mac = mac.unwrap_or_else(|| vmm::config::default_mac(name));
    Ok(NetConfig {
        backend,
        mac,
        rx_limit,
        tx_limit,
    })
}

/// `tcp:[ADDR:]HOSTPORT-GUESTPORT` or `udp:..` (ports 1..=65535, ADDR an IPv4 address).
pub(crate) fn parse_hostfwd(s: &str) -> Option<PortForward> {
    let (proto, rest) = s.split_once(':')?;
    let protocol = match proto {
        "tcp" => ForwardProtocol::Tcp,
        "udp" => ForwardProtocol::Udp,
        _ => return None,
    };
    let (host, guest) = rest.split_once('-')?;
    let (host_addr, host_port) = match host.rsplit_once(':') {
        Some((a, p)) => (Some(a.parse().ok()?), p),
        None => (None, host),
    };
    let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0);
    Some(PortForward {
        protocol,
        host_addr,
        host_port: port(host_port)?,
        guest_port: port(guest)?,
    })
}

/// `--mac` of `hearth restore`: a unicast MAC.
pub(crate) fn mac_arg(s: &str) -> Result<[u8; 6], String> {
    parse_mac(s)
        .filter(|b| b[0] & 1 == 0)
        .ok_or_else(|| format!("bad MAC '{s}' (expected unicast aa:bb:cc:dd:ee:ff)"))
}

/// Parses `cid=N,uds=PATH` (--vsock).
pub(crate) fn parse_vsock(spec: &str) -> Result<VsockConfig, CliError> {
    let bad = |why: String| CliError(format!("--vsock '{spec}': {why} (expected cid=N,uds=PATH)"));
    let (mut cid, mut uds) = (None, None);
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("cid", c)) => match c.parse::<u64>() {
                Ok(n) if (3..u64::from(u32::MAX)).contains(&n) => cid = Some(n),
                _ => return Err(bad(format!("CID '{c}' must be a number from 3 to 4294967294"))),
            },
            Some(("uds", p)) if !p.is_empty() => uds = Some(PathBuf::from(p)),
            _ => return Err(bad(format!("unknown or empty option '{part}'"))),
        }
    }
    let cid = cid.ok_or_else(|| bad("no cid".into()))?;
    let uds = uds.ok_or_else(|| bad("no uds".into()))?;
    Ok(VsockConfig { cid, uds })
}

/// Parses `target_mib=N[,deflate_on_oom][,stats_interval_s=S][,free_page_reporting]` (--balloon).
pub(crate) fn parse_balloon(spec: &str) -> Result<BalloonConfig, CliError> {
    let bad = |why: String| {
        CliError(format!(
            "--balloon '{spec}': {why} (expected target_mib=N[,deflate_on_oom][,stats_interval_s=S][,free_page_reporting])"
        ))
    };
    let mut cfg = BalloonConfig::default();
    let mut target = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("target_mib", n)) => target = Some(n.parse().map_err(|_| bad(format!("bad target_mib '{n}'")))?),
            Some(("stats_interval_s", s)) => {
                cfg.stats_polling_interval_s = s.parse().map_err(|_| bad(format!("bad stats_interval_s '{s}'")))?;
            }
            None if part == "deflate_on_oom" => cfg.deflate_on_oom = true,
            None if part == "free_page_reporting" => cfg.free_page_reporting = true,
            _ => return Err(bad(format!("unknown option '{part}'"))),
        }
    }
    cfg.amount_mib = target.ok_or_else(|| bad("no target_mib".into()))?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_specs() {
        let d = parse_drive("path=/x.img,ro,id=root", 0).unwrap();
        assert_eq!((d.id.as_str(), d.read_only), ("root", true));
        assert_eq!(d.path, PathBuf::from("/x.img"));
        assert_eq!(parse_drive("path=/y", 3).unwrap().id, "drive3");
        let d = parse_drive("path=/z,bps=1048576,iops=100", 0).unwrap();
        assert_eq!((d.bps, d.iops), (1 << 20, 100));
        let d = parse_drive("path=/z", 0).unwrap();
        assert_eq!(
            (d.bps, d.iops, d.direct),
            (0, 0, false),
            "no limits, page cache by default"
        );
        assert!(parse_drive("path=/z,direct", 0).unwrap().direct);
        for bad in [
            "path=/x,direct=1",
            "",
            "ro",
            "path=",
            "path=/x,rw",
            "path=/x,id=",
            "/x.img",
            "path=/x,bps=0",
            "path=/x,iops=-1",
            "path=/x,bps=1M",
        ] {
            let e = parse_drive(bad, 0).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--drive '{bad}'")), "{e}");
        }
    }

    #[test]
    fn balloon_specs() {
        let b = parse_balloon("target_mib=64,deflate_on_oom,stats_interval_s=2,free_page_reporting").unwrap();
        assert_eq!(
            b,
            BalloonConfig {
                amount_mib: 64,
                deflate_on_oom: true,
                stats_polling_interval_s: 2,
                free_page_reporting: true
            }
        );
        assert_eq!(parse_balloon("target_mib=0").unwrap(), BalloonConfig::default());
        for bad in [
            "",
            "deflate_on_oom",
            "target_mib=-1",
            "target_mib=x",
            "target_mib=1,stats_interval_s=70000",
            "target_mib=1,oom",
        ] {
            let e = parse_balloon(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--balloon '{bad}'")), "{e}");
        }
    }

    #[test]
    fn vsock_specs() {
        let v = parse_vsock("cid=3,uds=/tmp/v.sock").unwrap();
        assert_eq!((v.cid, v.uds), (3, PathBuf::from("/tmp/v.sock")));
        assert_eq!(parse_vsock("uds=/x,cid=4294967294").unwrap().cid, 4_294_967_294);
        for bad in [
            "",
            "cid=3",
            "uds=/x",
            "cid=2,uds=/x",
            "cid=x,uds=/x",
            "cid=4294967295,uds=/x",
            "cid=3,uds=",
            "cid=3,uds=/x,y",
        ] {
            let e = parse_vsock(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--vsock '{bad}'")), "{e}");
        }
    }

    #[test]
    fn net_specs() {
        let n = parse_net("tap=hnet0,mac=02:aa:bb:cc:dd:0e").unwrap();
        assert_eq!(n.backend, NetBackend::Tap("hnet0".into()));
        assert_eq!(n.mac, [2, 0xaa, 0xbb, 0xcc, 0xdd, 0x0e]);
        assert_eq!(parse_net("tap=t1").unwrap().mac, parse_net("tap=t1").unwrap().mac);
        assert_eq!((n.rx_limit, n.tx_limit), (NetLimit::default(), NetLimit::default()));
        let l = parse_net("tap=t1,rx_bps=1000,tx_pps=50,tx_bps=7").unwrap();
        assert_eq!(l.rx_limit, NetLimit { bps: 1000, pps: 0 });
        assert_eq!(l.tx_limit, NetLimit { bps: 7, pps: 50 });
        for bad in [
            "",
            "tap=",
            "tap=x,rx_bps=0",
            "tap=x,tx_pps=fast",
            "mac=02:00:00:00:00:01",
            "tap=x,mac=01:00:00:00:00:00",
            "tap=x,mac=02:00",
            "tap=x,y",
            "tap=x,hostfwd=tcp:1-2",
            "tap=x,user",
            "user,hostfwd=tcp:80",
            "user,hostfwd=tcp:0-80",
            "user,hostfwd=tcp:8080-65536",
            "user,hostfwd=sctp:1-2",
            "user,hostfwd=tcp:localhost:1-2",
            "user,hostfwd=tcp:::1:1-2",
        ] {
            let e = parse_net(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--net '{bad}'")), "{e}");
        }
    }

    #[test]
    fn user_net_specs() {
        let n = parse_net("user").unwrap();
        assert_eq!(n.backend, NetBackend::User { forwards: vec![] });
        assert_eq!(n.mac, vmm::config::default_mac("user"));
        let n = parse_net("user,mac=02:00:00:00:00:07,hostfwd=tcp:2222-22,hostfwd=udp:127.0.0.1:5353-53").unwrap();
        assert_eq!(n.mac, [2, 0, 0, 0, 0, 7]);
        let NetBackend::User { forwards } = n.backend else {
            panic!("not user")
        };
        assert_eq!(
            forwards,
            vec![
                PortForward {
                    protocol: ForwardProtocol::Tcp,
                    host_addr: None,
                    host_port: 2222,
                    guest_port: 22
                },
                PortForward {
                    protocol: ForwardProtocol::Udp,
                    host_addr: Some(std::net::Ipv4Addr::LOCALHOST),
                    host_port: 5353,
                    guest_port: 53
                },
            ]
        );
        assert_eq!(forwards[1].to_string(), "udp:127.0.0.1:5353-53");
    }
}
