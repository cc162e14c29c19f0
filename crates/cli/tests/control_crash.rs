//! Issue 13, crash windows: the hub killed (abort, like kill -9) at each step of `init`,
//! of instance create, stop, start and delete, of pool scale, reconcile and delete and
//! of `tenant destroy --force`, through test-only failpoints (`HANGAR_FAILPOINT`), then
//! run again: nothing is lost, duplicated or left half-done; a tenant destroy goes on
//! by itself after the restart.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn hangar(config: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(bin()).args(args).env("HANGAR_CONFIG", config).envs(env.iter().copied()).output().unwrap()
}

/// For every step of `init`: a kill there leaves no client config or one whose token
/// works; `init` run again finishes, and the hub it made serves the admin token.
#[test]
fn init_killed_at_every_step_leaves_nothing_or_a_usable_admin_token() {
    for step in ["init.after-keys", "init.after-db", "init.after-token", "init.after-config"] {
        let dir = tempfile::tempdir().unwrap();
        let (data, config) = (dir.path().join("data"), dir.path().join("config.json"));
        let listen = format!("127.0.0.1:{}", free_port());
        let args = ["init", "--data-dir", data.to_str().unwrap(), "--listen", &listen];
        let o = hangar(&config, &args, &[("HANGAR_FAILPOINT", step)]);
        assert!(!o.status.success(), "{step}: init did not stop at the failpoint");
        assert!(data.join("hub/init.partial").exists(), "{step}: the interrupted init left no marker");
        // Serving an interrupted init is refused, never half-made.
        let serve = hangar(&config, &["hub", "serve", "--data-dir", data.to_str().unwrap(), "--listen", &listen], &[]);
        assert!(!serve.status.success() && String::from_utf8_lossy(&serve.stderr).contains("hangar init"), "{step}: {serve:?}");
        let o = hangar(&config, &args, &[]);
        assert!(o.status.success(), "{step}: init again: {}", String::from_utf8_lossy(&o.stderr));
        assert!(!data.join("hub/init.partial").exists());
        let mut hub = Command::new(bin())
            .args(["hub", "serve", "--data-dir", data.to_str().unwrap(), "--listen", &listen])
            .env("HANGAR_CONFIG", &config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let cfg = hangar_node::config::load(&config).unwrap();
        let ok = block_on(async {
            let c = hangar_client::HubClient::new(&cfg.hub_url, &cfg.ca_pem, &cfg.token).unwrap();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(30) {
                if c.tenant_list().await.is_ok() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        });
        let _ = hub.kill();
        let _ = hub.wait();
        assert!(ok, "{step}: the admin token in the client config does not work");
    }
}

/// `pool delete` killed after it marked the pool (counts zero) and after its first
/// member: after a restart the reconciler never brings a member back, the members go,
/// and the delete run again removes the pool.
#[test]
fn pool_delete_killed_mid_way_converges_to_no_members() {
    for step in ["pool.delete.after-mark", "pool.delete.after-member"] {
        require_root();
        let once = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        std::fs::remove_file(&once).unwrap();
        let mut opts = FleetOptions::new(bin(), "hangar-crash-");
        opts.pool_size_mib = 2048;
        opts.env = vec![("HANGAR_FAILPOINT".into(), step.into()), ("HANGAR_FAILPOINT_ONCE".into(), once.to_str().unwrap().into())];
        let mut f = block_on(Fleet::start(opts)).unwrap_or_else(|e| panic!("{e:#}"));
        f.run(&["tenant", "create", "acme", "--max-running", "8", "--max-instances", "8", "--max-mem", "4096"]);
        f.run(&["pool", "create", "acme/workers", "--cpus", "1", "--mem", "64", "--disk", "64", "--running", "3"]);
        let c = f.client().unwrap();
        wait_until("3 running members", || block_on(c.pool_members("acme", "workers")).is_ok_and(|m| m.iter().filter(|i| i.state == hangar_types::InstanceState::Running).count() == 3));
        let o = f.try_run(&["pool", "delete", "acme/workers"]);
        assert!(!o.status.success(), "{step}: the delete did not hit the failpoint");
        assert!(once.exists(), "{step}: the failpoint did not fire");
        crash_and_restart(&mut f);
        let c = f.client().unwrap();
        // Converges to no members within 30 s, and none comes back meanwhile.
        let t = Instant::now();
        loop {
            let m = block_on(c.pool_members("acme", "workers")).unwrap_or_default();
            let live = m.iter().filter(|i| i.state != hangar_types::InstanceState::Deleted).count();
            assert!(live <= 3, "{step}: a member was added after the crash: {m:?}");
            if m.is_empty() {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "{step}: members left 30 s after the restart: {m:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
        let p = block_on(c.pool_info("acme", "workers")).unwrap();
        assert_eq!(p.pool.counts, hangar_types::api::PoolCounts::default(), "{step}: the pool was not marked for deletion");
        f.run(&["pool", "delete", "acme/workers"]);
        assert!(block_on(c.pool_list("acme")).unwrap().is_empty());
        assert!(block_on(c.instance_list(Some("acme"))).unwrap().is_empty());
    }
}

/// Restarts the fleet with `step` armed (it fires once), runs `args`, which must die
/// at the failpoint, and restarts the fleet again. The instant of that restart.
fn crash_at(f: &mut Fleet, dir: &std::path::Path, step: &str, args: &[&str]) -> Instant {
    let once = dir.join(step);
    f.set_env(vec![("HANGAR_FAILPOINT".into(), step.into()), ("HANGAR_FAILPOINT_ONCE".into(), once.to_str().unwrap().into())]);
    crash_and_restart(f);
    let o = f.try_run(args);
    assert!(!o.status.success() && once.exists(), "{step}: `hangar {}` did not die at the failpoint: {o:?}", args.join(" "));
    f.kill9();
    let restarted = Instant::now();
    f.spawn().unwrap();
    block_on(f.wait_ready()).unwrap_or_else(|e| panic!("{step}: {e:#}"));
    restarted
}

/// Waits until `done` holds for the tenant's instances and the host holds exactly
/// their volumes and no sandbox of anything else, at most 30 s after `restarted`;
/// `most` instances may exist at any time (more would be a duplicate).
fn converges(f: &Fleet, step: &str, restarted: Instant, most: usize, done: impl Fn(&[hangar_types::api::Instance]) -> bool) {
    let c = f.client().unwrap();
    let paths = hangar_agent::identity::AgentPaths::new(f.data_dir().join("agent"));
    loop {
        let list = block_on(c.instance_list(None)).unwrap_or_else(|e| panic!("{step}: {e:#}"));
        let live = list.iter().filter(|i| i.state != hangar_types::InstanceState::Deleted).count();
        assert!(live <= most, "{step}: {live} instances, at most {most} were asked for: {list:?}");
        let known: std::collections::BTreeSet<hangar_types::SandboxId> = list.iter().map(|i| i.id.sandbox_id()).collect();
        let inv = block_on(hangar_agent::inventory(&paths, &[])).unwrap();
        let volumes: std::collections::BTreeSet<_> = known.iter().map(hangar_types::VolumeId::from).collect();
        let host_matches = inv.sandboxes.iter().all(|s| known.contains(s)) && inv.volumes.iter().cloned().collect::<std::collections::BTreeSet<_>>() == volumes;
        let settled = list.iter().all(|i| i.desired.is_met_by(i.observed));
        if done(&list) && settled && host_matches {
            return;
        }
        assert!(restarted.elapsed() < Duration::from_secs(30), "{step}: not converged 30 s after the restart: instances {list:?}, host {inv:?}\n{}", hangar_harness::fleet::tail(&f.log(), 30));
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn count(list: &[hangar_types::api::Instance], state: hangar_types::InstanceState) -> usize {
    list.iter().filter(|i| i.state == state).count()
}

/// The hub (and its agent: one `hangar up`) killed right after each state change an
/// agent must see was committed, before its wake-up, operation or event: after the
/// restart the change is there, done once, and the host converges within 30 s.
#[test]
fn lifecycle_killed_after_every_committed_step_converges_within_30s() {
    use hangar_types::InstanceState::*;
    require_root();
    let mut opts = FleetOptions::new(bin(), "hangar-crash-");
    opts.pool_size_mib = 2048;
    let mut f = block_on(Fleet::start(opts)).unwrap_or_else(|e| panic!("{e:#}"));
    let dir = tempfile::tempdir().unwrap();
    f.run(&["tenant", "create", "acme", "--max-running", "8", "--max-instances", "8", "--max-mem", "4096"]);
    let named = |l: &[hangar_types::api::Instance], n: &str, s: hangar_types::InstanceState| l.len() == 1 && l[0].name.as_str() == n && l[0].state == s;

    let r = crash_at(&mut f, dir.path(), "instance.create.after-write", &["instance", "create", "acme/web", "--cpus", "1", "--mem", "64", "--disk", "64", "--start"]);
    converges(&f, "create", r, 1, |l| named(l, "web", Running));
    let r = crash_at(&mut f, dir.path(), "instance.stop.after-write", &["instance", "stop", "acme/web"]);
    converges(&f, "stop", r, 1, |l| named(l, "web", Stopped));
    let r = crash_at(&mut f, dir.path(), "instance.start.after-write", &["instance", "start", "acme/web"]);
    converges(&f, "start", r, 1, |l| named(l, "web", Running));
    let r = crash_at(&mut f, dir.path(), "instance.delete.after-write", &["instance", "delete", "acme/web"]);
    converges(&f, "delete", r, 1, |l| l.is_empty());

    f.run(&["pool", "create", "acme/workers", "--cpus", "1", "--mem", "64", "--disk", "64", "--running", "1"]);
    converges(&f, "pool create", Instant::now(), 1, |l| count(l, Running) == 1);
    let r = crash_at(&mut f, dir.path(), "pool.scale.after-counts", &["pool", "scale", "acme/workers", "--running", "3"]);
    converges(&f, "pool scale", r, 3, |l| count(l, Running) == 3);
    let r = crash_at(&mut f, dir.path(), "pool.reconcile.after-step", &["pool", "scale", "acme/workers", "--running", "5"]);
    converges(&f, "pool reconcile", r, 5, |l| count(l, Running) == 5);

    f.run(&["instance", "create", "acme/solo", "--cpus", "1", "--mem", "64", "--disk", "64", "--start"]);
    converges(&f, "solo", Instant::now(), 6, |l| count(l, Running) == 6);
    // `tenant destroy --force`, killed at each of its steps: the destroy goes on after
    // the restart (the tenant is marked with its operation) until the tenant is gone
    // with everything it had.
    let steps = ["tenant.destroy.accepted", "tenant.destroy.after-pools", "tenant.destroy.after-instances", "tenant.destroy.before-row"];
    for (i, step) in steps.into_iter().enumerate() {
        if i > 0 {
            f.run(&["tenant", "create", "acme", "--max-running", "8", "--max-instances", "8", "--max-mem", "4096"]);
            f.run(&["pool", "create", "acme/workers", "--cpus", "1", "--mem", "64", "--disk", "64", "--running", "1"]);
            f.run(&["instance", "create", "acme/solo", "--cpus", "1", "--mem", "64", "--disk", "64", "--start"]);
            converges(&f, step, Instant::now(), 2, |l| count(l, Running) == 2);
        }
        let r = crash_at(&mut f, dir.path(), step, &["tenant", "destroy", "acme", "--force"]);
        converges(&f, step, r, if i == 0 { 6 } else { 2 }, |l| l.is_empty());
        let c = f.client().unwrap();
        wait_until(&format!("{step}: the tenant row goes after the restart"), || block_on(c.tenant_list()).is_ok_and(|l| l.iter().all(|t| t.name.as_str() != "acme")));
        assert!(r.elapsed() < Duration::from_secs(30), "{step}: the tenant was gone only {:?} after the restart", r.elapsed());
        let inv = block_on(hangar_agent::inventory(&hangar_agent::identity::AgentPaths::new(f.data_dir().join("agent")), &[])).unwrap();
        assert_eq!(inv, hangar_agent::Inventory::default(), "{step}: left on the host after the destroy");
        let ok = block_on(c.events(None, 500)).unwrap().into_iter().filter(|e| e.action == "tenant.destroy" && e.result == "ok").count();
        assert_eq!(ok, i + 1, "{step}: every destroy ends once");
    }
}
