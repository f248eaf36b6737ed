//! Import of a configuration saved by nvmetcli, the Linux nvmet target's
//! configuration tool (`nvmetcli save`, by default `/etc/nvmet/config.json`).
//!
//! The file is a dump of nvmet's configfs tree (`/sys/kernel/config/nvmet`):
//! `subsystems`, `ports` and `hosts` arrays; each object carries its configfs
//! attribute groups as maps of the *writable* attributes, named without their
//! group prefix (file `attr_serial` → `"attr": {"serial": …}`, `device_path` →
//! `"device": {"path": …}`, `addr_trsvcid` → `"addr": {"trsvcid": …}`), values
//! as the strings read from configfs, and `enable` as an integer where the node
//! has an enable file. Subsystems list their namespaces (`nsid`, `ana_grpid`)
//! and `allowed_hosts`; ports list the subsystem NQNs linked to them, their
//! `ana_groups` (`grpid`, `"ana": {"state": …}`) and `referrals`. Facts and
//! sources: docs/spec-facts.md, "nvmetcli's saved configuration".
//!
//! [`convert`] turns such a file into this target's TOML configuration
//! (docs/target.md), keeping what has a counterpart and saying in
//! [`Converted::notes`] what it changed or left out, so an operator can read
//! both before serving. It never widens access: a subsystem linked to no TCP
//! port, or one no host may connect to, is left out, and a port that requires
//! TLS keeps requiring it (the keys, which nvmet keeps in the kernel keyring,
//! must then be added to the output).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

/// Why a file could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum NvmetcliError {
    /// Not JSON, or not nvmetcli's structure.
    #[error("not an nvmetcli configuration: {0}")]
    Parse(#[from] serde_json::Error),
    /// Nothing this target can serve.
    #[error("{0}")]
    Empty(String),
}

/// The result of [`convert`].
#[derive(Debug, Clone)]
pub struct Converted {
    /// The configuration, as TOML for `nvmf target --config`, starting with the
    /// notes as comments.
    pub toml: String,
    /// What was changed or left out, one sentence each.
    pub notes: Vec<String>,
}

/// An attribute group: attribute name → value (a string in nvmetcli's files;
/// numbers are accepted too, as nvmetcli's restore accepts them).
type Group = BTreeMap<String, Value>;

fn attr(g: &Group, k: &str) -> Option<String> {
    match g.get(k)? {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(u8::from(*b).to_string()),
        _ => None,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Saved {
    subsystems: Vec<Subsystem>,
    ports: Vec<Port>,
    hosts: Vec<Host>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Subsystem {
    nqn: String,
    attr: Group,
    namespaces: Vec<Namespace>,
    allowed_hosts: Vec<String>,
    passthru: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Namespace {
    nsid: u32,
    device: Group,
    enable: Option<i64>,
    ana_grpid: Option<u32>,
    ana: Group,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Port {
    portid: u32,
    addr: Group,
    param: Group,
    subsystems: Vec<String>,
    ana_groups: Vec<AnaGroup>,
    referrals: Vec<Referral>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AnaGroup {
    grpid: u32,
    ana: Group,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Referral {
    name: String,
    addr: Group,
    enable: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Host {
    nqn: String,
}

/// A TCP port of the file, as this target's listen address.
struct Listen {
    portid: u32,
    addr: String,
    subsystems: BTreeSet<String>,
}

/// `traddr` and `trsvcid` as an ADDR:PORT string (brackets for IPv6).
fn listen_addr(adrfam: &str, traddr: &str, trsvcid: &str) -> String {
    if adrfam == "ipv6" || traddr.contains(':') {
        format!("[{traddr}]:{trsvcid}")
    } else {
        format!("{traddr}:{trsvcid}")
    }
}

/// Adds `[[name]]` tables to `root`, one per item of `rows`, if there is any.
fn root_tables<const N: usize>(
    root: &mut toml::Table,
    name: &str,
    rows: impl Iterator<Item = [(&'static str, toml::Value); N]>,
) {
    let rows: Vec<toml::Value> = rows
        .map(|r| toml::Value::Table(r.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
        .collect();
    if !rows.is_empty() {
        root.insert(name.into(), toml::Value::Array(rows));
    }
}

/// Converts nvmetcli's saved JSON `text` into this target's TOML configuration.
pub fn convert(text: &str) -> Result<Converted, NvmetcliError> {
    let saved: Saved = serde_json::from_str(text)?;
    let mut notes = Vec::new();

    // Ports: TCP ones become listen addresses.
    let mut listens: Vec<Listen> = Vec::new();
    let mut tls_ports = Vec::new();
    let mut inline_sizes = BTreeSet::new();
    let mut ana_states = Vec::new();
    // nvmet keeps referrals per port; this target lists the same referrals on
    // every port.
    let mut referrals = BTreeSet::new();
    for p in &saved.ports {
        let trtype = attr(&p.addr, "trtype").unwrap_or_default();
        if trtype != "tcp" {
            notes.push(format!(
                "port {}: transport {:?} is not served (this target speaks NVMe/TCP); left out",
                p.portid, trtype
            ));
            continue;
        }
        let (Some(traddr), Some(trsvcid)) = (attr(&p.addr, "traddr"), attr(&p.addr, "trsvcid"))
        else {
            notes.push(format!("port {}: no traddr or trsvcid; left out", p.portid));
            continue;
        };
        let adrfam = attr(&p.addr, "adrfam").unwrap_or_default();
        let addr = listen_addr(&adrfam, &traddr, &trsvcid);
        let treq = attr(&p.addr, "treq").unwrap_or_default();
        let tsas = attr(&p.addr, "tsas").unwrap_or_default();
        if tsas.contains("tls") || treq == "required" && tsas != "none" && !tsas.is_empty() {
            tls_ports.push((addr.clone(), treq == "required"));
        }
        if let Some(n) = attr(&p.param, "inline_data_size").and_then(|v| v.parse::<i64>().ok()) {
            if n >= 0 {
                inline_sizes.insert(n);
            }
        }
        if let Some(q) = attr(&p.param, "max_queue_size").filter(|q| q != "1024") {
            notes.push(format!(
                "port {}: max_queue_size {q} is not applied (limits.max_queue_depth sets this target's)",
                p.portid
            ));
        }
        if attr(&p.param, "pi_enable").is_some_and(|v| v == "1") {
            notes.push(format!(
                "port {}: protection information (pi_enable) is not supported; served without",
                p.portid
            ));
        }
        for g in &p.ana_groups {
            let state = attr(&g.ana, "state").unwrap_or_else(|| "optimized".into());
            if state != "optimized" {
                ana_states.push((addr.clone(), g.grpid, state));
            }
        }
        for r in p.referrals.iter().filter(|r| r.enable != Some(0)) {
            let rt = attr(&r.addr, "trtype").unwrap_or_default();
            let port = attr(&r.addr, "trsvcid").and_then(|v| v.parse::<u16>().ok());
            match (rt.as_str(), attr(&r.addr, "traddr"), port) {
                ("tcp", Some(a), Some(port)) if !a.is_empty() => {
                    referrals.insert((a, port));
                }
                _ => notes.push(format!(
                    "port {} referral {:?}: only TCP referrals with traddr and trsvcid are served; left out",
                    p.portid, r.name
                )),
            }
        }
        listens.push(Listen {
            portid: p.portid,
            addr,
            subsystems: p.subsystems.iter().cloned().collect(),
        });
    }
    if listens.is_empty() {
        return Err(NvmetcliError::Empty(
            "the file has no TCP port (ports[].addr.trtype = \"tcp\"), so there is nothing to serve"
                .into(),
        ));
    }
    let linked: BTreeSet<&String> = listens.iter().flat_map(|l| &l.subsystems).collect();
    let first = &listens[0].subsystems;
    if listens.iter().any(|l| &l.subsystems != first) {
        notes.push(format!(
            "the ports link different subsystems ({}); this target serves every subsystem on every listen address",
            listens
                .iter()
                .map(|l| format!("port {}: {}", l.portid, l.subsystems.len()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let known_hosts: BTreeSet<&String> = saved.hosts.iter().map(|h| &h.nqn).collect();

    let mut root = toml::Table::new();
    root.insert(
        "listen".into(),
        toml::Value::Array(listens.iter().map(|l| l.addr.clone().into()).collect()),
    );
    if let Some(&max) = inline_sizes.iter().next_back() {
        if inline_sizes.len() > 1 {
            notes.push(format!(
                "the ports have different inline_data_size values {inline_sizes:?}; using {max}"
            ));
        }
        // This target's in-capsule size is a multiple of 16, at most 128 KiB.
        let size = (max.min(i64::from(crate::config::MAX_IN_CAPSULE_DATA)) / 16) * 16;
        let mut limits = toml::Table::new();
        limits.insert("in_capsule_data_size".into(), size.into());
        root.insert("limits".into(), limits.into());
    }
    if !tls_ports.is_empty() {
        let required = tls_ports.iter().any(|(_, r)| *r);
        root.insert(
            "tls".into(),
            if required { "required" } else { "not-required" }.into(),
        );
        if tls_ports.len() < listens.len() {
            root.insert(
                "tls_ports".into(),
                toml::Value::Array(tls_ports.iter().map(|(a, _)| a.clone().into()).collect()),
            );
        }
        notes.push(
            "TLS is configured on some ports: nvmet takes its PSKs from the kernel keyring, so add \
             tls_key = \"NVMeTLSkey-1:…\" to this file before serving (docs/target.md)"
                .into(),
        );
    }

    let mut subsystems = Vec::new();
    for s in &saved.subsystems {
        if s.passthru.is_some() {
            notes.push(format!(
                "subsystem {}: passthru subsystems are not supported; left out",
                s.nqn
            ));
            continue;
        }
        if !linked.contains(&s.nqn) {
            notes.push(format!(
                "subsystem {}: linked to no TCP port, so not reachable in nvmet; left out",
                s.nqn
            ));
            continue;
        }
        let mut t = toml::Table::new();
        t.insert("nqn".into(), s.nqn.clone().into());
        let any = attr(&s.attr, "allow_any_host").is_none_or(|v| v == "1");
        if !any {
            if s.allowed_hosts.is_empty() {
                notes.push(format!(
                    "subsystem {}: allow_any_host is 0 and no host is allowed, so nobody can connect; left out",
                    s.nqn
                ));
                continue;
            }
            for h in &s.allowed_hosts {
                if !known_hosts.contains(h) {
                    notes.push(format!(
                        "subsystem {}: allowed host {h} is not in the file's hosts; kept",
                        s.nqn
                    ));
                }
            }
            t.insert(
                "hosts".into(),
                toml::Value::Array(s.allowed_hosts.iter().map(|h| h.clone().into()).collect()),
            );
        } else if !s.allowed_hosts.is_empty() {
            notes.push(format!(
                "subsystem {}: allow_any_host is 1, so its allowed_hosts list does not restrict access (as in nvmet); any host may connect",
                s.nqn
            ));
        }
        if let Some(v) = attr(&s.attr, "serial").filter(|v| !v.is_empty()) {
            t.insert("serial".into(), v.into());
        }
        if let Some(v) = attr(&s.attr, "model").filter(|v| !v.is_empty()) {
            t.insert("model".into(), v.into());
        }
        for k in ["cntlid_min", "cntlid_max"] {
            if let Some(v) = attr(&s.attr, k).and_then(|v| v.parse::<i64>().ok()) {
                t.insert(k.into(), v.into());
            }
        }
        for k in ["pi_enable", "qid_max", "firmware", "ieee_oui", "version"] {
            if let Some(v) = attr(&s.attr, k) {
                // nvmet's defaults (and the kernel release it reports as
                // firmware) say nothing an operator chose.
                let default = match k {
                    "pi_enable" => v == "0",
                    "qid_max" => v == "128",
                    "ieee_oui" => v.trim_start_matches("0x").bytes().all(|b| b == b'0'),
                    "version" => v == "1.3",
                    _ => v.split('.').take(2).all(|p| p.parse::<u32>().is_ok()),
                };
                if !default && !v.is_empty() {
                    notes.push(format!(
                        "subsystem {}: attr {k} = {v:?} has no counterpart here; not applied",
                        s.nqn
                    ));
                }
            }
        }
        let mut nss = Vec::new();
        for n in &s.namespaces {
            if n.enable == Some(0) {
                notes.push(format!(
                    "subsystem {} namespace {}: disabled in nvmet (enable = 0); left out",
                    s.nqn, n.nsid
                ));
                continue;
            }
            let Some(path) = attr(&n.device, "path").filter(|p| !p.is_empty()) else {
                notes.push(format!(
                    "subsystem {} namespace {}: no device path; left out",
                    s.nqn, n.nsid
                ));
                continue;
            };
            let mut ns = toml::Table::new();
            ns.insert("nsid".into(), i64::from(n.nsid).into());
            if path.starts_with("/dev/") {
                ns.insert("device".into(), path.into());
            } else {
                // nvmet gives a file namespace the file's inode block size,
                // capped at 4096 (what every common filesystem reports).
                ns.insert("file".into(), path.into());
                ns.insert("block_size".into(), 4096.into());
            }
            if let Some(u) = attr(&n.device, "uuid").filter(|u| uuid::Uuid::parse_str(u).is_ok()) {
                ns.insert("uuid".into(), u.into());
            }
            if let Some(g) =
                attr(&n.device, "nguid").filter(|g| !g.trim_matches(['0', '-']).is_empty())
            {
                notes.push(format!(
                    "subsystem {} namespace {}: NGUID {g} is not kept (this target derives its own; the UUID is kept)",
                    s.nqn, n.nsid
                ));
            }
            let grp = n
                .ana_grpid
                .or_else(|| attr(&n.ana, "grpid").and_then(|g| g.parse().ok()))
                .unwrap_or(1);
            if grp != 1 {
                ns.insert("ana_group".into(), i64::from(grp).into());
            }
            nss.push(toml::Value::Table(ns));
        }
        if nss.is_empty() {
            notes.push(format!(
                "subsystem {}: no namespace to serve (it is kept: hosts can connect and see none)",
                s.nqn
            ));
        } else {
            t.insert("namespace".into(), toml::Value::Array(nss));
        }
        subsystems.push(toml::Value::Table(t));
    }
    if subsystems.is_empty() {
        return Err(NvmetcliError::Empty(format!(
            "no subsystem can be served: {}",
            notes.join("; ")
        )));
    }
    root.insert("subsystem".into(), toml::Value::Array(subsystems));
    root_tables(
        &mut root,
        "ana_state",
        ana_states.into_iter().map(|(port, group, state)| {
            [
                ("port", port.into()),
                ("group", i64::from(group).into()),
                ("state", state.into()),
            ]
        }),
    );
    root_tables(
        &mut root,
        "referral",
        referrals.into_iter().map(|(address, port)| {
            [
                ("address", address.into()),
                ("port", i64::from(port).into()),
            ]
        }),
    );

    let mut out =
        String::from("# Imported from an nvmetcli configuration (nvmf import-nvmetcli).\n");
    for n in &notes {
        out.push_str("# note: ");
        out.push_str(n);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&toml::to_string(&root).expect("a toml::Table serializes"));
    Ok(Converted { toml: out, notes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendSpec, TargetConfig};
    use std::path::Path;

    /// The shape `nvmetcli save` writes for a kernel with two subsystems, one
    /// TCP port with ANA group 2 non-optimized, and a restricted subsystem.
    const SAVED: &str = r#"{
  "hosts": [ { "nqn": "nqn.2014-08.org.nvmexpress:uuid:host-a" } ],
  "ports": [
    {
      "addr": { "adrfam": "ipv4", "traddr": "127.0.0.1", "treq": "not specified",
                "trsvcid": "4420", "trtype": "tcp", "tsas": "none" },
      "ana_groups": [ { "ana": { "state": "optimized" }, "grpid": 1 },
                      { "ana": { "state": "non-optimized" }, "grpid": 2 } ],
      "param": { "inline_data_size": "16384", "pi_enable": "0" },
      "portid": 1,
      "referrals": [ { "addr": { "adrfam": "ipv4", "traddr": "10.0.0.9", "treq": "not specified",
                                 "trsvcid": "8009", "trtype": "tcp", "tsas": "none" },
                       "enable": 1, "name": "r1" } ],
      "subsystems": [ "nqn.2024-01.io.example:a", "nqn.2024-01.io.example:b" ]
    },
    { "addr": { "adrfam": "ipv4", "traddr": "10.0.0.1", "treq": "not specified",
                "trsvcid": "4420", "trtype": "rdma", "tsas": "none" },
      "ana_groups": [], "param": {}, "portid": 2, "referrals": [], "subsystems": [] }
  ],
  "subsystems": [
    {
      "allowed_hosts": [],
      "attr": { "allow_any_host": "1", "cntlid_max": "65519", "cntlid_min": "1",
                "model": "Linux", "pi_enable": "0", "serial": "0123456789abcdef",
                "version": "1.3", "firmware": "custom", "qid_max": "128" },
      "namespaces": [
        { "ana": { "grpid": "1" }, "ana_grpid": 1,
          "device": { "nguid": "00000000-0000-0000-0000-000000000000",
                      "path": "/srv/a.img", "uuid": "6d3b8f4e-1c2a-4b5e-9f00-112233445566" },
          "enable": 1, "nsid": 1 },
        { "ana": { "grpid": "2" }, "ana_grpid": 2,
          "device": { "path": "/dev/loop0" }, "enable": 1, "nsid": 3 },
        { "device": { "path": "/srv/off.img" }, "enable": 0, "nsid": 4 }
      ],
      "nqn": "nqn.2024-01.io.example:a"
    },
    {
      "allowed_hosts": [ "nqn.2014-08.org.nvmexpress:uuid:host-a" ],
      "attr": { "allow_any_host": "0" },
      "namespaces": [ { "device": { "path": "/srv/b.img" }, "enable": 1, "nsid": 1 } ],
      "nqn": "nqn.2024-01.io.example:b"
    },
    { "allowed_hosts": [], "attr": { "allow_any_host": "1" }, "namespaces": [],
      "nqn": "nqn.2024-01.io.example:unlinked" }
  ]
}"#;

    #[test]
    fn converts_ports_subsystems_namespaces_hosts_and_ana() {
        let c = convert(SAVED).unwrap();
        let cfg = TargetConfig::from_toml(&c.toml, Path::new("imported.toml")).unwrap();
        assert_eq!(cfg.listen.len(), 1, "{}", c.toml);
        assert_eq!(cfg.listen[0].to_string(), "127.0.0.1:4420");
        assert_eq!(cfg.limits.in_capsule_data_size, Some(16384));
        assert_eq!(cfg.subsystems.len(), 2);
        let a = &cfg.subsystems[0];
        assert_eq!(a.nqn, "nqn.2024-01.io.example:a");
        assert_eq!(a.serial, "0123456789abcdef");
        assert_eq!(a.model, "Linux");
        assert!(a.hosts.is_empty());
        assert_eq!(a.namespaces.len(), 2);
        assert_eq!(a.namespaces[0].nsid, 1);
        assert_eq!(
            a.namespaces[0].backend,
            BackendSpec::File {
                path: "/srv/a.img".into(),
                size: None
            }
        );
        assert_eq!(a.namespaces[0].block_size, 4096);
        assert_eq!(
            a.namespaces[0].uuid.unwrap().to_string(),
            "6d3b8f4e-1c2a-4b5e-9f00-112233445566"
        );
        assert_eq!(a.namespaces[1].nsid, 3);
        assert_eq!(
            a.namespaces[1].backend,
            BackendSpec::Device {
                path: "/dev/loop0".into()
            }
        );
        assert_eq!(a.namespaces[1].ana_group, 2);
        let b = &cfg.subsystems[1];
        assert_eq!(b.hosts.len(), 1);
        assert_eq!(b.hosts[0].nqn, "nqn.2014-08.org.nvmexpress:uuid:host-a");
        assert_eq!(cfg.ana_states.len(), 1);
        assert_eq!(cfg.referrals.len(), 1, "{}", c.toml);
        let joined = c.notes.join("\n");
        assert!(!joined.contains("version"), "a default is noted:\n{joined}");
        assert!(!joined.contains("qid_max"), "a default is noted:\n{joined}");
        for expect in [
            "port 2: transport \"rdma\"",
            "namespace 4: disabled",
            "unlinked: linked to no TCP port",
            "attr firmware = \"custom\"",
        ] {
            assert!(joined.contains(expect), "no note {expect:?} in\n{joined}");
        }
        assert!(c
            .toml
            .starts_with("# Imported from an nvmetcli configuration"));
    }

    #[test]
    fn a_closed_subsystem_stays_closed_and_tls_stays_required() {
        let text = r#"{"hosts": [], "ports": [{"portid": 1, "addr": {"trtype": "tcp",
            "adrfam": "ipv6", "traddr": "::1", "trsvcid": "4420", "treq": "required",
            "tsas": "tls1.3"}, "subsystems": ["nqn.x:closed", "nqn.x:open"]}],
            "subsystems": [
              {"nqn": "nqn.x:closed", "attr": {"allow_any_host": "0"}, "allowed_hosts": [],
               "namespaces": [{"nsid": 1, "device": {"path": "/srv/c"}, "enable": 1}]},
              {"nqn": "nqn.x:open", "attr": {"allow_any_host": 1},
               "namespaces": [{"nsid": 1, "device": {"path": "/srv/o"}, "enable": 1}]}]}"#;
        let c = convert(text).unwrap();
        assert!(c.toml.contains("listen = [\"[::1]:4420\"]"), "{}", c.toml);
        assert!(c.toml.contains("tls = \"required\""), "{}", c.toml);
        assert!(!c.toml.contains("nqn.x:closed\""), "{}", c.toml);
        // Without a key the TLS configuration does not load: TLS is not dropped.
        assert!(TargetConfig::from_toml(&c.toml, Path::new("x.toml")).is_err());
    }

    #[test]
    fn inline_data_size_is_capped_and_rounded_to_what_the_target_takes() {
        for (inline, expect) in [("262144", 131_072), ("131072", 131_072), ("1000", 992)] {
            let text = format!(
                r#"{{"hosts": [], "ports": [{{"portid": 1, "addr": {{"trtype": "tcp",
                "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": "4420"}},
                "param": {{"inline_data_size": "{inline}"}}, "subsystems": ["nqn.2024-01.io.x:o"]}}],
                "subsystems": [{{"nqn": "nqn.2024-01.io.x:o", "attr": {{"allow_any_host": "1"}},
                "namespaces": [{{"nsid": 1, "device": {{"path": "/srv/o"}}, "enable": 1}}]}}]}}"#
            );
            let c = convert(&text).unwrap();
            let cfg = TargetConfig::from_toml(&c.toml, Path::new("x.toml")).unwrap();
            assert_eq!(cfg.limits.in_capsule_data_size, Some(expect), "{inline}");
        }
    }

    #[test]
    fn nothing_to_serve_is_an_error_that_says_why() {
        let e = convert(r#"{"ports": [{"portid": 1, "addr": {"trtype": "rdma"}}]}"#).unwrap_err();
        assert!(e.to_string().contains("no TCP port"), "{e}");
        assert!(matches!(convert("[1, 2]"), Err(NvmetcliError::Parse(_))));
        assert!(matches!(convert("not json"), Err(NvmetcliError::Parse(_))));
    }
}
