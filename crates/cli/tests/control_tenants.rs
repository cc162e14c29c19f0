//! Issue 13, tenants: `tenant destroy --force` removes everything a tenant has through
//! the normal paths and leaves no row, sandbox, volume, namespace, veth, cgroup or
//! bridge; a new tenant with the old name sees none of the old one's events; specs
//! that alone pass a quota are refused at create with the quota named.

mod common;

use common::*;
use hangar_types::InstanceState;

#[test]
fn destroy_force_leaves_nothing_and_a_reused_name_sees_no_history() {
    let f = up();
    let t = f.json(&["tenant", "create", "acme", "--max-vcpus", "8", "--max-mem", "4096", "--max-running", "6", "--max-instances", "8", "--max-disk", "10"]);
    let net_id = t["net_id"].as_u64().unwrap() as u32;

    // Quota at create: one instance (or pool member) of this spec could never run.
    let err = f.fail(&["instance", "create", "acme/huge", "--cpus", "64", "--mem", "64", "--disk", "64"]);
    assert!(err.contains("max_vcpus"), "{err}");
    let err = f.fail(&["pool", "create", "acme/huge", "--cpus", "1", "--mem", "8192", "--disk", "64", "--running", "0"]);
    assert!(err.contains("max_mem_mib"), "{err}");

    f.run(&["pool", "create", "acme/workers", "--cpus", "1", "--mem", "64", "--disk", "64", "--running", "2"]);
    f.run(&["instance", "create", "acme/solo", "--cpus", "1", "--mem", "64", "--disk", "64", "--start"]);
    let c = f.client().unwrap();
    wait_until("3 running instances", || block_on(c.instance_list(Some("acme"))).is_ok_and(|l| l.len() == 3 && l.iter().all(|i| i.state == InstanceState::Running)));
    let sandboxes: Vec<hangar_types::SandboxId> = block_on(c.instance_list(Some("acme"))).unwrap().iter().map(|i| i.id.sandbox_id()).collect();
    let old_op = f.json(&["instance", "stop", "acme/solo", "--no-wait"]);

    let err = f.fail(&["tenant", "destroy", "acme"]);
    assert!(err.contains("--force"), "{err}");
    // One operation, followed to its end: 2 members, the pool and solo removed.
    let op = f.json(&["tenant", "destroy", "acme", "--force"]);
    assert_eq!((op["kind"].as_str(), op["status"].as_str()), (Some("tenant.destroy"), Some("succeeded")), "{op}");
    assert_eq!((op["progress"]["done"].as_u64(), op["progress"]["total"].as_u64()), (Some(4), Some(4)), "{op}");

    assert!(block_on(c.tenant_list()).unwrap().iter().all(|t| t.name.as_str() != "acme"));
    assert!(block_on(c.instance_list(None)).unwrap().is_empty());
    let inv = block_on(hangar_agent::inventory(&hangar_agent::identity::AgentPaths::new(f.data_dir().join("agent")), &sandboxes)).unwrap();
    // The fleet had only acme's instances: nothing at all may be left.
    assert_eq!(inv, hangar_agent::Inventory::default(), "left behind after destroy --force (sandboxes {sandboxes:?})");
    let range: hangar_types::net::ClusterRange = format!("10.{}.0.0/16", f.range_octet).parse().unwrap();
    let bridge = hangar_types::net::bridge_name(range.subnet(net_id));
    wait_until("the tenant's bridge goes", || {
        let o = std::process::Command::new("ip").args(["link", "show", &bridge]).output().unwrap();
        !o.status.success()
    });

    // The name again: a new tenant, without the old one's history.
    f.run(&["tenant", "create", "acme"]);
    let tok = f.json(&["token", "create", "--tenant", "acme"])["token"].as_str().unwrap().to_string();
    let as_acme = hangar_client::HubClient::new(&hangar_node::config::load(&f.config()).unwrap().hub_url, &hangar_node::config::load(&f.config()).unwrap().ca_pem, &tok).unwrap();
    let mine = block_on(as_acme.events(None, 500)).unwrap();
    assert!(mine.iter().all(|e| !e.object.contains("workers") && !e.object.contains("solo")), "the new acme sees old events: {mine:?}");
    assert!(mine.iter().any(|e| e.action == "tenant.create"));
    let admin_view = block_on(c.events(Some("acme"), 500)).unwrap();
    assert!(admin_view.iter().all(|e| !e.object.contains("solo")), "{admin_view:?}");
    let op_id = old_op["id"].as_str().unwrap();
    let err = block_on(as_acme.operation_get(op_id.parse().unwrap())).unwrap_err();
    assert_eq!(err.code(), Some(hangar_types::ErrorCode::NotFound), "the new acme reads the old one's operation");
}

/// A tenant that `destroy --force` is emptying takes nothing new: a create under way
/// would otherwise keep the destroy waiting for the newcomer forever. The destroy is
/// held open by an instance on a stopped host (its removal waits for the host).
#[test]
fn a_tenant_being_destroyed_takes_nothing_new() {
    let f = up();
    f.run(&["host", "add", "node-b", "--provider", "local"]);
    f.run(&["tenant", "create", "beta"]);
    f.run(&["instance", "create", "beta/held", "--host", "node-b", "--start", "--", "sleep", "infinity"]);
    let c = f.client().unwrap();
    wait_until("beta/held running", || block_on(c.instance_get("beta", "held")).is_ok_and(|i| i.state == InstanceState::Running));
    f.run(&["host", "stop", "node-b"]);
    let op = f.json(&["tenant", "destroy", "beta", "--force", "--no-wait"]);
    assert_eq!(op["kind"], "tenant.destroy", "{op}");
    let err = f.fail(&["tenant", "info", "beta"]);
    assert!(err.contains("being destroyed"), "a tenant being destroyed is still readable: {err}");
    let err = f.fail(&["instance", "create", "beta/late", "--start"]);
    assert!(err.contains("being destroyed"), "{err}");
    let err = f.fail(&["pool", "create", "beta/late", "--running", "1"]);
    assert!(err.contains("being destroyed"), "{err}");
    // The host back, the destroy ends and nothing of beta is left.
    f.run(&["host", "start", "node-b"]);
    let id: hangar_types::OperationId = op["id"].as_str().unwrap().parse().unwrap();
    wait_until("the destroy ends", || block_on(c.operation_get(id)).is_ok_and(|o| o.status == hangar_types::api::OperationStatus::Succeeded));
    assert!(block_on(c.tenant_list()).unwrap().iter().all(|t| t.name.as_str() != "beta"));
    assert!(block_on(c.instance_list(None)).unwrap().is_empty());
}
