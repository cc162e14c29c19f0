//! An agent's `inet hangar_<host>` nftables table, written whole through nft's JSON interface so a
//! change is one atomic transaction:
//! - input: traffic from tenant bridges to the host itself is dropped (replies to
//!   connections the host opened are let through);
//! - forward: traffic from one tenant bridge to another is dropped;
//! - postrouting: traffic from the cluster range leaving through anything but a tenant
//!   bridge is masqueraded.
//!
//! Same-bridge traffic is switched by the bridge; with br_netfilter built in (then
//! `net.bridge.bridge-nf-call-iptables` is 1 in every namespace) it also passes the
//! forward hook, where the rules above leave it alone.

use super::NetError;
use serde_json::{json, Value};

fn meta(key: &str, op: &str, right: &str) -> Value {
    json!({"match": {"op": op, "left": {"meta": {"key": key}}, "right": right}})
}

/// The whole ruleset of `table` for these tenant bridges of one cluster range.
pub fn ruleset(table: &str, range: &str, bridges: &[String]) -> Value {
    let rule = |chain: &str, expr: Vec<Value>| json!({"add": {"rule": {"family": "inet", "table": table, "chain": chain, "expr": expr}}});
    let chain = |name: &str, kind: &str, hook: &str, prio: i32| {
        json!({"add": {"chain": {"family": "inet", "table": table, "name": name, "type": kind, "hook": hook, "prio": prio, "policy": "accept"}}})
    };
    let t = json!({"family": "inet", "name": table});
    let mut cmds = vec![
        // add + delete + add: replaces the table whether or not it existed.
        json!({"add": {"table": t}}),
        json!({"delete": {"table": t}}),
        json!({"add": {"table": t}}),
        chain("input", "filter", "input", 0),
        chain("forward", "filter", "forward", 0),
        chain("postrouting", "nat", "postrouting", 100),
        rule("input", vec![meta("iifname", "==", "hgb*"), json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}), json!({"accept": null})]),
        rule("input", vec![meta("iifname", "==", "hgb*"), json!({"drop": null})]),
    ];
    for b in bridges {
        cmds.push(rule("forward", vec![meta("iifname", "==", b), meta("oifname", "==", "hgb*"), meta("oifname", "!=", b), json!({"drop": null})]));
    }
    {
        let (addr, len) = range.split_once('/').unwrap_or((range, "32"));
        let len: u32 = len.parse().unwrap_or(32);
        cmds.push(rule(
            "postrouting",
            vec![
                json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": addr, "len": len}}}}),
                // Traffic that stays inside the cluster range keeps its source: the
                // hosts' own network (the range's first /24) carries the tenant
                // overlays, and with br_netfilter loaded (Docker loads it) even bridged
                // packets would otherwise be masqueraded.
                json!({"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": addr, "len": len}}}}),
                meta("oifname", "!=", "hgb*"),
                json!({"masquerade": null}),
            ],
        ));
    }
    json!({"nftables": cmds})
}

async fn nft(args: &[&str], stdin: Option<String>) -> Result<String, NetError> {
    use tokio::io::AsyncWriteExt;
    let mut c = tokio::process::Command::new("nft");
    c.args(args).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = c.spawn().map_err(|e| NetError::Nft(format!("cannot run nft (install nftables): {e}")))?;
    if let (Some(s), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(s.as_bytes()).await.map_err(|e| NetError::Nft(e.to_string()))?;
    }
    let out = child.wait_with_output().await.map_err(|e| NetError::Nft(e.to_string()))?;
    if !out.status.success() {
        return Err(NetError::Nft(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Replaces the table with the rules for `bridges` in one transaction; with no bridges
/// the table is removed.
pub async fn apply(table: &str, range: &str, bridges: &[String]) -> Result<(), NetError> {
    if bridges.is_empty() {
        return remove(table).await;
    }
    nft(&["-j", "-f", "-"], Some(ruleset(table, range, bridges).to_string())).await.map(|_| ())
}

pub async fn remove(table: &str) -> Result<(), NetError> {
    if present(table).await {
        nft(&["delete", "table", "inet", table], None).await?;
    }
    Ok(())
}

/// Whether the table exists with its three chains.
pub async fn present(table: &str) -> bool {
    match nft(&["-j", "list", "table", "inet", table], None).await {
        Ok(out) => ["\"input\"", "\"forward\"", "\"postrouting\""].iter().all(|c| out.contains(c)),
        Err(_) => false,
    }
}
