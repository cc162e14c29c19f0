//! A hostile tenant against volumes, files and images, on a real fleet (root, runc,
//! btrfs). Each test names the attack and fails if the defence is removed.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tenant(f: &Fleet) {
    f.run(&["tenant", "create", "acme", "--max-vcpus", "8", "--max-mem", "8192", "--max-running", "4", "--max-instances", "10", "--max-disk", "20"]);
}

/// The volume of instance `acme/NAME` on the fleet's own host.
fn volume_of(f: &Fleet, name: &str) -> PathBuf {
    let id: hangar_types::InstanceId = f.json(&["instance", "info", &format!("acme/{name}")])["id"].as_str().unwrap().parse().unwrap();
    f.data_dir().join("agent/storage/pool/volumes").join(id.sandbox_id().as_str())
}

fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(o.status.success(), "{cmd}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn gone(f: &Fleet, name: &str) -> bool {
    !f.try_run(&["instance", "info", &format!("acme/{name}")]).status.success()
}

/// Attack: nested subvolume. Subvolumes made inside a volume (here from the host, as
/// seccomp refuses the ioctls inside a sandbox) made its deletion fail forever and the
/// instance stay `deleted`, blocking the tenant's removal.
#[test]
fn nested_subvolumes_do_not_block_a_volume_delete() {
    let f = up();
    tenant(&f);
    f.run(&["instance", "create", "acme/nest", "--start"]);
    let vol = volume_of(&f, "nest");
    sh(&format!("btrfs subvolume create {0}/inner && btrfs subvolume create {0}/inner/deeper && mkdir -p {0}/a/b && btrfs subvolume create {0}/a/b/c && btrfs subvolume snapshot -r {0} {0}/snap", vol.display()));
    f.run(&["instance", "delete", "acme/nest"]);
    assert!(gone(&f, "nest"));
    assert!(!vol.exists(), "the volume is still there");
    let left = sh(&format!("btrfs subvolume list {}", f.data_dir().join("agent/storage/pool").display()));
    assert!(!left.contains(vol.file_name().unwrap().to_str().unwrap()), "subvolumes left behind: {left}");
    f.run(&["tenant", "destroy", "acme"]);
}

/// A delete that fails (the volume made immutable) keeps the instance `deleted` with the
/// error shown, is retried, and finishes by itself once the cause is gone.
#[test]
fn a_failed_delete_shows_its_error_and_is_retried_until_it_succeeds() {
    let f = up();
    tenant(&f);
    f.run(&["instance", "create", "acme/stuck"]);
    let vol = volume_of(&f, "stuck");
    wait_until("the volume exists", || vol.exists());
    sh(&format!("chattr +i {}", vol.display()));
    f.run(&["instance", "delete", "acme/stuck", "--no-wait"]);
    wait_until("the delete error is shown", || {
        let i = f.json(&["instance", "info", "acme/stuck"]);
        i["state"] == "deleted" && i["error"].as_str().is_some_and(|e| e.contains("delete failed") && e.contains("Operation not permitted"))
    });
    let shown = f.run(&["instance", "info", "acme/stuck"]);
    assert!(shown.contains("Operation not permitted"), "{shown}");
    sh(&format!("chattr -i {}", vol.display()));
    wait_until("the retried delete succeeds", || gone(&f, "stuck"));
    assert!(!vol.exists());
    f.run(&["tenant", "destroy", "acme"]);
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

/// Attack: read other tenants' env and commands from files other host users can read
/// (store, desired documents, bundles, logs, keys), also files an older hangar made.
#[test]
fn data_files_are_private() {
    let f = up();
    tenant(&f);
    f.run(&["instance", "create", "acme/secret", "--start", "--env", "PASSWORD=hunter2", "--", "sh", "-c", "echo started; exec sleep infinity"]);
    let data = f.data_dir();
    let agent = data.join("agent");
    let id: hangar_types::InstanceId = f.json(&["instance", "info", "acme/secret"])["id"].as_str().unwrap().parse().unwrap();
    let sid = id.sandbox_id();
    wait_until("the log exists", || agent.join(format!("logs/{sid}.log")).exists());
    // No listing and no reading by others for the dirs; nothing but the owner for files.
    for d in [data.clone(), agent.clone(), agent.join("bundles")] {
        assert_eq!(mode(&d) & 0o066, 0, "{} is listable or writable by others: {:o}", d.display(), mode(&d));
    }
    for d in [data.join("hub"), agent.join("logs")] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    let files = [
        data.join("hub/hangar.db"),
        data.join("hub/hangar.db-wal"),
        data.join("hub/hangar.db-shm"),
        data.join("hub/ca.key"),
        agent.join("desired.json"),
        agent.join("identity.json"),
        agent.join("host.key"),
        agent.join(format!("bundles/{sid}/config.json")),
        agent.join(format!("logs/{sid}.log")),
        agent.join("storage/pool.img"),
    ];
    for p in &files {
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }
    // An upgrade keeps an older hangar's 0644 files: they are fixed on start.
    for p in [agent.join("desired.json"), agent.join(format!("logs/{sid}.log")), data.join("hub/hangar.db")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut f = f;
    crash_and_restart(&mut f);
    for p in [agent.join("desired.json"), agent.join(format!("logs/{sid}.log")), data.join("hub/hangar.db")] {
        assert_eq!(mode(&p), 0o600, "{} after a restart", p.display());
    }
    assert_eq!(mode(&data) & 0o066, 0, "the data dir after a restart");
}

/// Attack: a tenant names a host directory as its image and reads it as root.
#[test]
fn images_are_an_admin_decision() {
    let f = up();
    tenant(&f);
    let tok = f.json(&["token", "create", "--tenant", "acme"])["token"].as_str().unwrap().to_string();
    // A tenant: dir: refused with a 4xx naming the field; registering an image is
    // not theirs either.
    let err = f.fail(&["instance", "create", "acme/evil", "--image", "dir:/etc", "--token", &tok]);
    assert!(err.contains("image:") && err.contains("hangar image add"), "{err}");
    let err = f.fail(&["pool", "create", "acme/evil", "--image", "dir:/etc", "--token", &tok]);
    assert!(err.contains("image:"), "{err}");
    let err = f.fail(&["image", "add", "mine", "--dir", "/", "--token", &tok]);
    assert!(err.contains("admin"), "{err}");
    assert!(f.fail(&["image", "list", "--token", &tok]).contains("admin"));
    // Not for an admin either: a host path is not an image.
    let err = f.fail(&["instance", "create", "acme/evil", "--image", "dir:/etc"]);
    assert!(err.contains("image:"), "{err}");
    let err = f.fail(&["instance", "create", "acme/evil", "--image", "nosuch", "--token", &tok]);
    assert!(err.contains("image:") && err.contains("nosuch"), "{err}");

    // An admin registers a directory and a tarball of a small root filesystem.
    let src = f.data_dir().join("rootfs-src");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    // A tiny root: sh, cat and sleep with the libraries they load.
    sh(&format!(
        "for b in /bin/sh /bin/cat /bin/sleep; do cp -L --parents $b {0}; for l in $(ldd $b | grep -o '/[^ ]*'); do cp -L --parents $l {0}; done; done; echo from-image > {0}/marker",
        src.display()
    ));
    let tar = f.data_dir().join("rootfs.tar");
    sh(&format!("tar -cf {} -C {} .", tar.display(), src.display()));
    f.run(&["image", "add", "rootdir", "--dir", src.to_str().unwrap()]);
    let added = f.json(&["image", "add", "roottar", "--tar", tar.to_str().unwrap()]);
    assert_eq!(added["sha256"].as_str().unwrap().len(), 64);
    assert!(f.fail(&["image", "add", "rootdir", "--dir", src.to_str().unwrap()]).contains("already exists"));
    let list = f.json(&["image", "list"]);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["rootdir", "roottar"]);

    // A tenant uses them by name; both run from the image's root.
    for (inst, image) in [("fromdir", "rootdir"), ("fromtar", "roottar")] {
        f.run(&["instance", "create", &format!("acme/{inst}"), "--image", image, "--start", "--token", &tok]);
        assert_eq!(f.run(&["instance", "exec", &format!("acme/{inst}"), "--token", &tok, "--", "cat", "/marker"]), "from-image\n");
    }
    // In use: refused, naming the instance.
    let err = f.fail(&["image", "remove", "roottar"]);
    assert!(err.contains("in use") && err.contains("acme/fromtar"), "{err}");
    f.run(&["instance", "delete", "acme/fromtar"]);
    f.run(&["image", "remove", "roottar"]);
    let list = f.json(&["image", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    f.run(&["instance", "delete", "acme/fromdir"]);
    f.run(&["image", "remove", "rootdir"]);
}
