//! `hangar cp [-r] SRC DST`: each side is `TENANT/INSTANCE:PATH` (a path under /home,
//! the instance's volume) or a local path. Local to instance is an upload, instance to
//! local a download, instance to instance a copy the hub arranges (the bytes never pass
//! through here). Uploads and downloads are tar streams made and read as they go.
//!
//! Like cp(1): an existing directory as DST receives SRC under its own name; otherwise
//! DST's parent must exist and SRC takes DST's name; directories need -r. Locally,
//! modes and mtimes are kept, owners are not (a download belongs to who runs it); in an
//! instance, what an upload writes belongs to the instance's root.

use crate::output::Out;
use anyhow::{anyhow, bail, Context, Result};
use hangar_client::files::{byte_channel, ChannelReader};
use hangar_client::HubClient;
use hangar_types::files::{volume_path, CopyEnd, CopyRequest, CopyVia, FilesQuery};
use hangar_types::InstanceRef;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

#[derive(Debug)]
enum End {
    Local(PathBuf),
    Instance(InstanceRef, String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Local(p) => write!(f, "{}", p.display()),
            End::Instance(r, p) => write!(f, "{r}:{p}"),
        }
    }
}

/// `TENANT/INSTANCE:PATH`, else a local path (write `./a:b` for a local name with a colon).
fn parse_end(which: &str, arg: &str) -> Result<End> {
    if let Some((r, path)) = arg.split_once(':')
        && r.contains('/')
        && !r.starts_with('.')
        && !r.starts_with('/')
    {
        let r: InstanceRef = r.parse().map_err(|e| anyhow!("{which} '{arg}': {e} (an instance is TENANT/INSTANCE:PATH; write ./{arg} for a local path)"))?;
        volume_path(path).map_err(|e| anyhow!("{which} '{arg}': {e}"))?;
        return Ok(End::Instance(r, path.to_string()));
    }
    if arg.is_empty() {
        bail!("{which} is empty: give a local path or TENANT/INSTANCE:/home/PATH");
    }
    Ok(End::Local(PathBuf::from(arg)))
}

pub async fn cp(c: &HubClient, out: &Out, src: &str, dst: &str, recursive: bool) -> Result<i32> {
    let (from, to) = (parse_end("SRC", src)?, parse_end("DST", dst)?);
    let (written, via) = match (&from, &to) {
        (End::Local(_), End::Local(_)) => bail!("SRC and DST are both local paths: one of them must be TENANT/INSTANCE:/home/PATH (use cp(1) for local copies)"),
        (End::Local(p), End::Instance(r, path)) => (upload(c, p, r, path, recursive).await?, "upload"),
        (End::Instance(r, path), End::Local(p)) => (download(c, r, path, p, recursive).await?, "download"),
        (End::Instance(fr, fp), End::Instance(tr, tp)) => {
            let end = |r: &InstanceRef, path: &String| CopyEnd { tenant: r.tenant.clone(), instance: r.name.clone(), path: path.clone() };
            let res = c.files_copy(&CopyRequest { from: end(fr, fp), to: end(tr, tp), recursive }).await?;
            (res.written, match res.via {
                CopyVia::Reflink => "reflink copy on the host",
                CopyVia::Transfer => "streamed between hosts",
            })
        }
    };
    out.item(
        &serde_json::json!({"from": from.to_string(), "to": to.to_string(), "entries": written.entries, "bytes": written.bytes, "via": via}),
        &format!("copied {from} to {to}: {} entries, {} bytes ({via})", written.entries, written.bytes),
    );
    Ok(0)
}

async fn upload(c: &HubClient, local: &Path, r: &InstanceRef, path: &str, recursive: bool) -> Result<hangar_types::files::FilesWritten> {
    // Followed like cp(1) follows its arguments; symlinks inside a directory are sent as symlinks.
    let meta = std::fs::metadata(local).with_context(|| format!("SRC '{}'", local.display()))?;
    if meta.is_dir() && !recursive {
        bail!("SRC '{}' is a directory: copy it with -r", local.display());
    }
    let name = match local.file_name() {
        Some(n) => PathBuf::from(n),
        None => PathBuf::from(std::fs::canonicalize(local)?.file_name().ok_or_else(|| anyhow!("SRC '{}' has no name to copy under", local.display()))?),
    };
    let (w, stream) = byte_channel();
    let src = local.to_path_buf();
    let tar = tokio::task::spawn_blocking(move || {
        let failer = w.clone();
        let r = (|| {
            let mut b = tar::Builder::new(w);
            b.follow_symlinks(false);
            add(&mut b, &src, &name, true)?;
            b.finish().context("cannot end the stream")
        })();
        if let Err(e) = &r {
            failer.fail(std::io::Error::other(e.to_string()));
        }
        r
    });
    let sent = c.files_upload(r.tenant.as_str(), r.name.as_str(), &FilesQuery { path: path.to_string(), recursive }, stream).await;
    match (sent, tar.await?) {
        (Ok(w), Ok(())) => Ok(w),
        // The hub's refusal (it may come before the stream is read, which then breaks
        // off the local side) says why.
        (Err(e @ hangar_client::ClientError::Api(_)), _) => Err(e.into()),
        // Otherwise the local side's own error says more than the broken upload it caused.
        (_, Err(e)) => Err(e),
        (Err(e), Ok(())) => Err(e.into()),
    }
}

/// Adds `src` as `name`; a directory with everything below it, sorted.
fn add<W: std::io::Write>(b: &mut tar::Builder<W>, src: &Path, name: &Path, top: bool) -> Result<()> {
    let meta = if top { std::fs::metadata(src) } else { std::fs::symlink_metadata(src) }.with_context(|| format!("cannot read '{}'", src.display()))?;
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    // The instance's root owns what is uploaded, whoever owns it here.
    h.set_uid(0);
    h.set_gid(0);
    let ft = meta.file_type();
    if ft.is_dir() {
        h.set_size(0);
        b.append_data(&mut h, name, std::io::empty())?;
        let mut names: Vec<_> = std::fs::read_dir(src)?.map(|e| e.map(|e| e.file_name())).collect::<std::io::Result<_>>()?;
        names.sort();
        for n in names {
            add(b, &src.join(&n), &name.join(&n), false)?;
        }
    } else if ft.is_file() {
        let f = std::fs::File::open(src).with_context(|| format!("cannot read '{}'", src.display()))?;
        b.append_data(&mut h, name, f.take(meta.len()))?;
    } else if ft.is_symlink() {
        b.append_link(&mut h, name, std::fs::read_link(src)?)?;
    } else {
        bail!("'{}' is a device file, fifo or socket: only files, directories and symlinks are copied", src.display());
    }
    Ok(())
}

/// Where a download goes: into an existing directory, or as a new name in one.
enum Target {
    Into(PathBuf),
    As(PathBuf),
}

async fn download(c: &HubClient, r: &InstanceRef, path: &str, local: &Path, recursive: bool) -> Result<hangar_types::files::FilesWritten> {
    let target = if local.is_dir() {
        Target::Into(local.to_path_buf())
    } else if local.to_string_lossy().ends_with('/') {
        bail!("DST '{}' is not an existing directory", local.display());
    } else {
        let parent = local.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !parent.is_dir() {
            bail!("DST '{}': the directory '{}' does not exist", local.display(), parent.display());
        }
        Target::As(local.to_path_buf())
    };
    let stream = c.files_download(r.tenant.as_str(), r.name.as_str(), &FilesQuery { path: path.to_string(), recursive }).await?;
    let reader = ChannelReader::spawn(stream);
    tokio::task::spawn_blocking(move || extract(reader, &target, recursive)).await?
}

/// Refuses to write through a symlink the stream (or anyone) put under `base`.
fn no_symlink_between(base: &Path, rel: &Path) -> Result<()> {
    let mut at = base.to_path_buf();
    let n = rel.components().count();
    for (i, c) in rel.components().enumerate() {
        at.push(c);
        if i + 1 < n && std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            bail!("refusing to write '{}' through the symlink '{}'", rel.display(), at.display());
        }
    }
    Ok(())
}

fn extract(r: impl Read, target: &Target, recursive: bool) -> Result<hangar_types::files::FilesWritten> {
    let mut written = hangar_types::files::FilesWritten::default();
    let mut a = tar::Archive::new(r);
    let mut dirs = vec![];
    let (base, rename) = match target {
        Target::Into(d) => (d.clone(), None),
        Target::As(p) => (p.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf(), p.file_name().map(PathBuf::from)),
    };
    for e in a.entries().context("the stream is not a tar stream")? {
        let mut e = e.context("the stream broke off")?;
        let path = e.path()?.into_owned();
        let mut parts: Vec<PathBuf> = vec![];
        for c in path.components() {
            match c {
                Component::Normal(n) => parts.push(PathBuf::from(n)),
                Component::CurDir => {}
                _ => bail!("the stream names '{}', which is absolute or holds '..': refused", path.display()),
            }
        }
        if let (Some(first), Some(n)) = (parts.first_mut(), &rename) {
            *first = n.clone();
        }
        let rel: PathBuf = parts.iter().collect();
        if rel.as_os_str().is_empty() {
            continue;
        }
        no_symlink_between(&base, &rel)?;
        let dest = base.join(&rel);
        let kind = e.header().entry_type();
        let existing = std::fs::symlink_metadata(&dest).ok();
        match (kind.is_dir(), existing.as_ref().map(|m| m.is_dir())) {
            (true, Some(true)) if !recursive => bail!("'{}' is an existing directory: copy with -r to merge into it", dest.display()),
            (true, Some(true)) => {}
            (true, Some(false)) => bail!("'{}' exists and is not a directory", dest.display()),
            (false, Some(true)) => bail!("'{}' is an existing directory: a file cannot replace it", dest.display()),
            (false, Some(false)) => std::fs::remove_file(&dest)?,
            (_, None) => {}
        }
        if !(kind.is_dir() || kind.is_file() || kind.is_symlink()) {
            bail!("'{}' in the stream is not a file, directory or symlink: refused", path.display());
        }
        e.set_preserve_permissions(true);
        e.set_preserve_mtime(true);
        e.set_unpack_xattrs(false);
        e.unpack(&dest).with_context(|| format!("cannot write '{}'", dest.display()))?;
        if kind.is_dir() {
            dirs.push((dest, e.header().mtime().unwrap_or(0)));
        } else if kind.is_file() {
            written.bytes += e.size();
        }
        written.entries += 1;
    }
    // Last: writing their entries moved the directories' times.
    for (d, mtime) in dirs.iter().rev() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(*mtime);
        std::fs::File::open(d).and_then(|f| f.set_modified(t)).with_context(|| format!("cannot set the time of '{}'", d.display()))?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_parse_as_instances_or_local_paths() {
        assert!(matches!(parse_end("SRC", "acme/a:/home/f").unwrap(), End::Instance(_, p) if p == "/home/f"));
        assert!(matches!(parse_end("SRC", "./data.tar").unwrap(), End::Local(_)));
        assert!(matches!(parse_end("SRC", "./a/b:c").unwrap(), End::Local(_)));
        assert!(matches!(parse_end("SRC", "/tmp/a:b").unwrap(), End::Local(_)));
        assert!(parse_end("DST", "acme/a:/etc/passwd").unwrap_err().to_string().contains("outside the instance's volume"));
        assert!(parse_end("DST", "Acme/a:/home").is_err());
    }
}
