//! `hangar cp` end to end on a real fleet (root, runc, btrfs pools, a second host as a
//! network namespace): uploads and downloads byte-identical with mode and mtime kept,
//! directories with -r, a reflink copy between two volumes of one host, copies across
//! hosts, and every refusal: symlinks leading out of the volume, `..`, paths outside
//! /home, device files and fifos, a file onto an existing directory, directories
//! without -r, another tenant with a tenant token, an unknown instance. A refused copy
//! leaves nothing behind (no staging directory, nothing outside the volume).

mod common;

use common::{block_on, Fleet, exec, api_error};
use hangar_types::files::{CopyEnd, CopyRequest, FilesQuery};
use hangar_types::{ApiError, ErrorCode};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};



fn volume(f: &Fleet, host: &str, instance: &str) -> PathBuf {
    let i = f.json(&["instance", "info", instance]);
    let id: hangar_types::InstanceId = i["id"].as_str().unwrap().parse().unwrap();
    let agent = if host == "local" { f.data_dir().join("agent") } else { f.data_dir().join("hosts").join(host).join("agent") };
    let p = agent.join("storage/pool/volumes").join(id.sandbox_id().as_str());
    assert!(p.is_dir(), "no volume at {}", p.display());
    p
}

fn end(instance: &str, path: &str) -> CopyEnd {
    let (t, i) = instance.split_once('/').unwrap();
    CopyEnd { tenant: t.parse().unwrap(), instance: i.parse().unwrap(), path: path.into() }
}

fn copy_req(from: &str, from_path: &str, to: &str, to_path: &str, recursive: bool) -> CopyRequest {
    CopyRequest { from: end(from, from_path), to: end(to, to_path), recursive }
}

fn download_err(c: &hangar_client::HubClient, instance: &str, path: &str, recursive: bool) -> ApiError {
    let (t, i) = instance.split_once('/').unwrap();
    api_error(block_on(c.files_download(t, i, &FilesQuery { path: path.into(), recursive })).map(|_| ()))
}

fn no_staging_left(f: &Fleet, instance: &str) {
    assert_eq!(exec(f, instance, "ls -a /home | grep -c hangar-copy || true").trim(), "0", "a staging directory was left in {instance}");
}

/// `stat` inside the instance: mode (octal), mtime, uid, gid, size.
fn stat_in(f: &Fleet, instance: &str, path: &str) -> String {
    exec(f, instance, &format!("stat -c '%a %Y %u %g %s' {path}")).trim().to_string()
}

fn sha_in(f: &Fleet, instance: &str, path: &str) -> String {
    exec(f, instance, &format!("sha256sum {path} | cut -d' ' -f1")).trim().to_string()
}

fn sha_local(p: &Path) -> String {
    let o = std::process::Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap().to_string()
}

fn set_mtime(p: &Path, secs: u64) {
    let f = std::fs::File::options().write(!p.is_dir()).read(p.is_dir()).open(p).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).unwrap();
}

#[test]
fn upload_download_copy_across_hosts_and_refusals() {
    let f = common::up();
    let c = f.client().unwrap();
    // Two hosts as network namespaces: their agents' endpoints reach each other (the
    // fleet's own host listens on loopback, which a transfer cannot reach).
    for h in ["node-b", "node-c"] {
        f.run(&["host", "add", h, "--provider", "local"]);
    }
    for t in ["acme", "beta"] {
        f.run(&["tenant", "create", t, "--max-running", "8", "--max-disk", "8"]);
    }
    // a, b, beta/x on node-b; c on node-c (placement is steered by draining).
    f.run(&["host", "drain", "local"]);
    f.run(&["host", "drain", "node-c"]);
    for i in ["acme/a", "acme/b", "beta/x"] {
        f.run(&["instance", "create", i, "--disk", "512", "--start", "--", "sleep", "infinity"]);
    }
    f.run(&["host", "undrain", "node-c"]);
    f.run(&["host", "drain", "node-b"]);
    f.run(&["instance", "create", "acme/c", "--disk", "512", "--start", "--", "sleep", "infinity"]);
    f.run(&["host", "undrain", "node-b"]);
    assert_eq!(f.json(&["instance", "info", "acme/a"])["host"], "node-b");
    assert_eq!(f.json(&["instance", "info", "acme/c"])["host"], "node-c");

    let t = tempfile::tempdir().unwrap();
    // ---- upload: byte-identical, mode and mtime kept, owned by the instance's root
    let data = t.path().join("data.bin");
    let bytes: Vec<u8> = (0..3 * 1024 * 1024 + 123).map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&data, &bytes).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o640)).unwrap();
    set_mtime(&data, 1_000_000_000);
    let out = f.run(&["cp", data.to_str().unwrap(), "acme/a:/home/"]);
    assert!(out.contains("copied") && out.contains("upload"), "{out}");
    assert_eq!(stat_in(&f, "acme/a", "/home/data.bin"), format!("640 1000000000 0 0 {}", bytes.len()));
    assert_eq!(sha_in(&f, "acme/a", "/home/data.bin"), sha_local(&data));
    // On the host the owner is the instance's root: the first id of its range.
    let base = std::fs::metadata(volume(&f, "node-b", "acme/a")).unwrap().uid();
    assert_eq!(std::fs::metadata(volume(&f, "node-b", "acme/a").join("data.bin")).unwrap().uid(), base);
    // Under another name, into a directory that does not exist yet: refused.
    f.run(&["cp", data.to_str().unwrap(), "acme/a:/home/renamed.bin"]);
    assert_eq!(sha_in(&f, "acme/a", "/home/renamed.bin"), sha_local(&data));
    let err = f.fail(&["cp", data.to_str().unwrap(), "acme/a:/home/nodir/x.bin"]);
    assert!(err.contains("does not exist"), "{err}");

    // ---- download: byte-identical, mode and mtime kept
    let back = t.path().join("back.bin");
    f.run(&["cp", "acme/a:/home/data.bin", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), bytes);
    let m = std::fs::metadata(&back).unwrap();
    assert_eq!((m.permissions().mode() & 0o7777, m.mtime()), (0o640, 1_000_000_000));
    let dl = t.path().join("dl");
    std::fs::create_dir(&dl).unwrap();
    f.run(&["cp", "acme/a:/home/data.bin", &format!("{}/", dl.display())]);
    assert_eq!(std::fs::read(dl.join("data.bin")).unwrap(), bytes);

    // ---- directories: -r needed; modes, mtimes, symlinks kept
    let d = t.path().join("proj");
    std::fs::create_dir_all(d.join("sub/deep")).unwrap();
    std::fs::create_dir(d.join("empty")).unwrap();
    std::fs::write(d.join("sub/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(d.join("sub/run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(d.join("sub/deep/notes.txt"), "deep\n").unwrap();
    std::os::unix::fs::symlink("sub/run.sh", d.join("link")).unwrap();
    set_mtime(&d.join("sub/deep/notes.txt"), 1_100_000_000);
    set_mtime(&d.join("sub/deep"), 1_200_000_000);
    set_mtime(&d.join("sub"), 1_300_000_000);
    let err = f.fail(&["cp", d.to_str().unwrap(), "acme/a:/home/"]);
    assert!(err.contains("-r"), "{err}");
    f.run(&["cp", "-r", d.to_str().unwrap(), "acme/a:/home/"]);
    let tree = |inst: &str, root: &str| exec(&f, inst, &format!("cd {root} && find . -printf '%p %y %m\\n' | sort"));
    let want = ". d 755\n./empty d 755\n./link l 777\n./sub d 755\n./sub/deep d 755\n./sub/deep/notes.txt f 644\n./sub/run.sh f 750\n";
    assert_eq!(tree("acme/a", "/home/proj"), want);
    assert_eq!(exec(&f, "acme/a", "readlink /home/proj/link"), "sub/run.sh\n");
    assert_eq!(stat_in(&f, "acme/a", "/home/proj/sub/deep").split(' ').nth(1), Some("1200000000"));
    assert_eq!(stat_in(&f, "acme/a", "/home/proj/sub").split(' ').nth(1), Some("1300000000"));
    // A file named like an existing directory cannot replace it; a directory merges
    // into it only with -r.
    let other = t.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("proj"), "a file").unwrap();
    let e = f.fail(&["cp", other.join("proj").to_str().unwrap(), "acme/a:/home/"]);
    assert!(e.contains("existing directory"), "{e}");
    assert_eq!(exec(&f, "acme/a", "test -d /home/proj && echo dir"), "dir\n");
    std::fs::remove_file(other.join("proj")).unwrap();
    std::fs::create_dir(other.join("proj")).unwrap();
    std::fs::write(other.join("proj/new.txt"), "new\n").unwrap();
    f.run(&["cp", "-r", other.join("proj").to_str().unwrap(), "acme/a:/home/"]);
    assert_eq!(exec(&f, "acme/a", "cat /home/proj/new.txt /home/proj/sub/deep/notes.txt"), "new\ndeep\n");
    // Download a directory back with -r.
    let dd = t.path().join("proj-back");
    f.run(&["cp", "-r", "acme/a:/home/proj", dd.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(dd.join("sub/deep/notes.txt")).unwrap(), "deep\n");
    assert_eq!(std::fs::read_link(dd.join("link")).unwrap(), Path::new("sub/run.sh"));
    assert_eq!(std::fs::metadata(dd.join("sub/run.sh")).unwrap().permissions().mode() & 0o777, 0o750);
    assert_eq!(std::fs::metadata(dd.join("sub/deep")).unwrap().mtime(), 1_200_000_000);
    assert!(f.fail(&["cp", "acme/a:/home/proj", dd.to_str().unwrap()]).contains("-r"));

    // ---- same host: a reflink copy, no bytes through the hub
    let out = f.run(&["cp", "acme/a:/home/data.bin", "acme/b:/home/copy.bin"]);
    assert!(out.contains("reflink"), "{out}");
    assert_eq!(stat_in(&f, "acme/b", "/home/copy.bin"), format!("640 1000000000 0 0 {}", bytes.len()));
    assert_eq!(sha_in(&f, "acme/b", "/home/copy.bin"), sha_local(&data));
    let vb = volume(&f, "node-b", "acme/b").join("copy.bin");
    let frag = std::process::Command::new("filefrag").arg("-v").arg(&vb).output().unwrap();
    assert!(String::from_utf8_lossy(&frag.stdout).contains("shared"), "the copy shares no extent: {}", String::from_utf8_lossy(&frag.stdout));
    f.run(&["cp", "-r", "acme/a:/home/proj", "acme/b:/home/"]);
    assert_eq!(tree("acme/b", "/home/proj"), tree("acme/a", "/home/proj"));

    // ---- across hosts, and back
    let out = f.run(&["cp", "acme/a:/home/data.bin", "acme/c:/home/"]);
    assert!(out.contains("between hosts"), "{out}");
    assert_eq!(stat_in(&f, "acme/c", "/home/data.bin"), format!("640 1000000000 0 0 {}", bytes.len()));
    assert_eq!(sha_in(&f, "acme/c", "/home/data.bin"), sha_local(&data));
    f.run(&["cp", "-r", "acme/a:/home/proj", "acme/c:/home/proj2"]);
    assert_eq!(tree("acme/c", "/home/proj2"), tree("acme/a", "/home/proj"));
    exec(&f, "acme/c", "echo from-c > /home/proj2/c.txt");
    f.run(&["cp", "-r", "acme/c:/home/proj2", "acme/a:/home/"]);
    assert_eq!(exec(&f, "acme/a", "cat /home/proj2/c.txt"), "from-c\n");
    let e = f.fail(&["cp", "acme/c:/home/proj2", "acme/a:/home/"]);
    assert!(e.contains("-r"), "{e}");

    // ---- across tenants: admin only
    let tok: hangar_types::api::TokenCreated = block_on(c.token_create(&serde_json::from_value(serde_json::json!({"tenant": "acme"})).unwrap())).unwrap();
    let tenant = c.with_token(&tok.token);
    let e = api_error(block_on(tenant.files_copy(&copy_req("acme/a", "/home/data.bin", "beta/x", "/home/", false))));
    assert_eq!((e.code, e.code.http_status()), (ErrorCode::Forbidden, 403), "{e:?}");
    assert!(e.message.contains("admin token"), "{e:?}");
    assert_eq!(exec(&f, "beta/x", "ls /home"), "");
    // Within its own tenant the tenant token copies.
    block_on(tenant.files_copy(&copy_req("acme/a", "/home/renamed.bin", "acme/b", "/home/", false))).unwrap();
    let r = block_on(c.files_copy(&copy_req("acme/a", "/home/data.bin", "beta/x", "/home/", false))).unwrap();
    assert_eq!(r.written.bytes, bytes.len() as u64);
    // Owners map into beta/x's own range.
    let xbase = std::fs::metadata(volume(&f, "node-b", "beta/x")).unwrap().uid();
    assert_ne!(xbase, base);
    assert_eq!(std::fs::metadata(volume(&f, "node-b", "beta/x").join("data.bin")).unwrap().uid(), xbase);

    // ---- refusals: nothing read outside the volume, nothing written
    exec(&f, "acme/a", "ln -s /etc /home/etc-link; ln -s ../../../../../../../.. /home/up; ln -s /proc/self/root /home/proc-root; mkfifo /home/fifo; mkdir /home/withfifo; mkfifo /home/withfifo/p");
    let va = volume(&f, "node-b", "acme/a");
    assert!(std::process::Command::new("mknod").arg(va.join("null0")).args(["c", "1", "3"]).status().unwrap().success());
    for (path, want) in [
        ("/home/etc-link/passwd", "outside the instance's volume"),
        ("/home/up/etc/passwd", "outside the instance's volume"),
        ("/home/proc-root/etc/passwd", "outside the instance's volume"),
        ("/home/etc-link", "outside the instance's volume"),
        ("/home/fifo", "fifo"),
        ("/home/null0", "device file"),
        ("/home/../etc/passwd", "'..'"),
        ("/etc/passwd", "outside the instance's volume"),
    ] {
        let e = download_err(&c, "acme/a", path, false);
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{path}: {e:?}");
        assert!(e.message.contains(want), "{path}: {e:?}");
    }
    let e = download_err(&c, "acme/a", "/home/withfifo", true);
    assert!(e.message.contains("fifo"), "{e:?}");
    let e = download_err(&c, "acme/a", "/home/nothing-here", false);
    assert_eq!(e.code, ErrorCode::NotFound, "{e:?}");
    let e = f.fail(&["cp", "acme/a:/home/etc-link/passwd", t.path().to_str().unwrap()]);
    assert!(e.contains("outside the instance's volume"), "{e}");
    assert!(!t.path().join("passwd").exists());
    // Writes through an escaping symlink or onto '..' are refused; the host's /etc is untouched.
    let marker = t.path().join("hangar-cp-escape-marker");
    std::fs::write(&marker, "x").unwrap();
    let e = f.fail(&["cp", marker.to_str().unwrap(), "acme/a:/home/etc-link/"]);
    assert!(e.contains("outside the instance's volume"), "{e}");
    let e = f.fail(&["cp", marker.to_str().unwrap(), "acme/a:/home/up/tmp/"]);
    assert!(e.contains("outside the instance's volume"), "{e}");
    assert!(!Path::new("/etc/hangar-cp-escape-marker").exists() && !Path::new("/tmp/hangar-cp-escape-marker").exists());
    let e = api_error(block_on(c.files_copy(&copy_req("acme/b", "/home/copy.bin", "acme/a", "/home/etc-link/", false))));
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{e:?}");
    let e = api_error(block_on(c.files_copy(&copy_req("acme/c", "/home/data.bin", "acme/a", "/home/up/", false))));
    assert!(e.message.contains("outside the instance's volume"), "{e:?}");
    let e = api_error(block_on(c.files_copy(&copy_req("acme/a", "/home/fifo", "acme/c", "/home/", false))));
    assert!(e.message.contains("fifo"), "{e:?}");
    let e = api_error(block_on(c.files_copy(&copy_req("acme/a", "/home/../x", "acme/b", "/home/", false))));
    assert!(e.message.starts_with("from.path: "), "{e:?}");
    // A file onto an existing directory, across hosts too: 409, the directory stays.
    let e = api_error(block_on(c.files_copy(&copy_req("acme/c", "/home/data.bin", "acme/a", "/home/proj2/sub/deep/../../..", false))));
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{e:?}");
    exec(&f, "acme/c", "mkdir -p /home/box/data.bin");
    let e = api_error(block_on(c.files_copy(&copy_req("acme/a", "/home/data.bin", "acme/c", "/home/box/", false))));
    assert_eq!(e.code, ErrorCode::AlreadyExists, "{e:?}");
    assert!(e.message.contains("existing directory"), "{e:?}");
    assert_eq!(exec(&f, "acme/c", "test -d /home/box/data.bin && echo dir"), "dir\n");
    // The fleet's own host serves its agent on loopback: no host can stream to it.
    f.run(&["host", "undrain", "local"]);
    f.run(&["instance", "create", "acme/l", "--host", "local", "--disk", "256", "--start", "--", "sleep", "infinity"]);
    let e = api_error(block_on(c.files_copy(&copy_req("acme/c", "/home/data.bin", "acme/l", "/home/", false))));
    assert_eq!(e.code, ErrorCode::Unavailable, "{e:?}");
    assert!(e.message.contains("loopback"), "{e:?}");
    // Unknown instances.
    let e = api_error(block_on(c.files_copy(&copy_req("acme/a", "/home/data.bin", "acme/nope", "/home/", false))));
    assert_eq!(e.code, ErrorCode::NotFound, "{e:?}");
    let e = f.fail(&["cp", "acme/nope:/home/x", t.path().to_str().unwrap()]);
    assert!(e.contains("not found"), "{e}");
    for i in ["acme/a", "acme/b", "acme/c"] {
        no_staging_left(&f, i);
    }
    // Events record uploads and copies.
    let ev = f.run(&["events", "acme", "--last", "100"]);
    assert!(ev.contains("files.upload") && ev.contains("files.copy"), "{ev}");
}
