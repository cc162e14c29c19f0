//! `hangar secret ...`, `hangar instance proxy-token ...` and `hangar instance proxy`:
//! getting into a workspace (hangar_types::access), shown.
//!
//! Secret values are read from a file or stdin and go only into the request body;
//! nothing here prints them. `instance proxy` hands a proxy token to the command it
//! runs through a 0600 file (curl's `-H @file`) or the environment, never argv.

use crate::args::{parse_ref, ProxyTokenCmd, SecretCmd};
use crate::output::Out;
use anyhow::{bail, Context, Result};
use base64::Engine;
use hangar_client::HubClient;
use hangar_types::access::{parse_secret_name, parse_ttl, ProxyTokenCreate, ProxyTokenInfo, SecretSet, SECRET_MAX_BYTES};
use hangar_types::Name;
use std::io::Read;

/// `--secret` flags as names; the error names the flag.
pub fn secret_names(flags: &[String]) -> Result<Vec<Name>> {
    let names = flags.iter().map(|s| parse_secret_name(s).map_err(|e| anyhow::anyhow!("--secret: {e}"))).collect::<Result<Vec<_>>>()?;
    hangar_types::access::check_secret_names(&names).map_err(|e| anyhow::anyhow!("--{e}"))?;
    Ok(names)
}

/// Reads at most one byte past the limit, so a huge file is refused without reading it all.
fn read_value(path: &std::path::Path) -> Result<Vec<u8>> {
    let limit = SECRET_MAX_BYTES as u64 + 1;
    let mut buf = vec![];
    if path.as_os_str() == "-" {
        std::io::stdin().take(limit).read_to_end(&mut buf).context("--from-file -: cannot read stdin")?;
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut buf)).with_context(|| format!("--from-file: cannot read {}", path.display()))?;
    }
    hangar_types::access::check_secret_value(&buf).map_err(|e| anyhow::anyhow!("--from-file: {}", e.trim_start_matches("value: ")))?;
    Ok(buf)
}

pub async fn secret_cmd(c: &HubClient, out: &Out, cmd: &SecretCmd) -> Result<()> {
    match cmd {
        SecretCmd::Set { secret, from_file } => {
            let r = parse_ref("secret", secret)?;
            let value = read_value(from_file)?;
            let info = c.secret_set(r.tenant.as_str(), r.name.as_str(), &SecretSet { value_b64: base64::engine::general_purpose::STANDARD.encode(&value) }).await?;
            let users = if info.used_by.is_empty() { String::new() } else { format!("; instances {} see it within one reconcile pass", info.used_by.iter().map(Name::as_str).collect::<Vec<_>>().join(", ")) };
            out.item(&info, &format!("secret {}/{} set ({} bytes, version {}){users}", info.tenant, info.name, info.size_bytes, info.version));
        }
        SecretCmd::List { tenant } => {
            let list = c.secret_list(tenant).await?;
            let text = if list.is_empty() {
                format!("tenant '{tenant}' has no secrets")
            } else {
                let mut lines = vec![format!("{:<32} {:>8} {:>10}  USED BY", "NAME", "BYTES", "VERSION")];
                lines.extend(list.iter().map(|s| format!("{:<32} {:>8} {:>10}  {}", s.name, s.size_bytes, s.version, s.used_by.iter().map(Name::as_str).collect::<Vec<_>>().join(","))));
                lines.join("\n")
            };
            out.item(&list, &text);
        }
        SecretCmd::Delete { secret, force } => {
            let r = parse_ref("secret", secret)?;
            let info = c.secret_delete(r.tenant.as_str(), r.name.as_str(), *force).await?;
            out.item(&info, &format!("secret {}/{} deleted", info.tenant, info.name));
        }
    }
    Ok(())
}

fn token_line(t: &ProxyTokenInfo) -> String {
    format!("{:<16} port {:<5} expires {}", t.id, t.port, t.expires_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default())
}

pub async fn proxy_token_cmd(c: &HubClient, out: &Out, cmd: Option<&ProxyTokenCmd>, instance: Option<&str>, port: Option<u16>, ttl: Option<&str>) -> Result<()> {
    match cmd {
        Some(ProxyTokenCmd::List { instance }) => {
            let r = parse_ref("instance", instance)?;
            let list = c.proxy_token_list(r.tenant.as_str(), r.name.as_str()).await?;
            let text = if list.is_empty() { format!("{r} has no proxy tokens") } else { list.iter().map(token_line).collect::<Vec<_>>().join("\n") };
            out.item(&list, &text);
        }
        Some(ProxyTokenCmd::Revoke { instance, id }) => {
            let r = parse_ref("instance", instance)?;
            let t = c.proxy_token_revoke(r.tenant.as_str(), r.name.as_str(), id).await?;
            out.item(&t, &format!("proxy token {} of {r} revoked", t.id));
        }
        None => {
            let (Some(instance), Some(port)) = (instance, port) else { bail!("give TENANT/NAME and --port, or `list` / `revoke`") };
            let r = parse_ref("instance", instance)?;
            let ttl_secs = ttl.map(|t| parse_ttl(t).map_err(|e| anyhow::anyhow!("--ttl: {e}"))).transpose()?;
            let req = ProxyTokenCreate { port, ttl_secs };
            req.ttl().map_err(|e| anyhow::anyhow!("--{}", e.replace("ttl_secs", "ttl")))?;
            let t = c.proxy_token_create(r.tenant.as_str(), r.name.as_str(), &req).await?;
            // The token alone on stdout, so `T=$(hangar instance proxy-token ...)` works.
            out.item(&t, &t.token);
            if !out.json {
                eprintln!("url: {}{}  (id {}, expires {})", c.base_url(), t.path, t.info.id, t.info.expires_at);
            }
        }
    }
    Ok(())
}

/// A private (0600) temporary file holding `content`, removed when dropped.
fn private_file(content: &str) -> Result<tempfile::NamedTempFile> {
    use std::io::Write;
    let mut f = tempfile::Builder::new().prefix("hangar-proxy-").tempfile().context("cannot create a private temporary file")?;
    f.write_all(content.as_bytes())?;
    f.flush()?;
    Ok(f)
}

pub async fn proxy_cmd(c: &HubClient, ca_pem: &str, out: &Out, instance: &str, port: u16, ttl: &str, command: &[String]) -> Result<i32> {
    let r = parse_ref("instance", instance)?;
    let ttl_secs = parse_ttl(ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
    let req = ProxyTokenCreate { port, ttl_secs: Some(ttl_secs) };
    req.ttl().map_err(|e| anyhow::anyhow!("--{}", e.replace("ttl_secs", "ttl")))?;
    let t = c.proxy_token_create(r.tenant.as_str(), r.name.as_str(), &req).await?;
    let base = format!("{}{}", c.base_url(), t.path);
    if command.is_empty() {
        out.item(&serde_json::json!({"url": base, "token": t.token, "expires_at": t.info.expires_at}), &format!("url:   {base}\ntoken: {}\nexpires: {}", t.token, t.info.expires_at));
        return Ok(0);
    }
    let url = |a: &str| format!("{base}{}", a.trim_start_matches('/'));
    let mut args: Vec<String> = command[1..].iter().map(|a| if a.starts_with('/') { url(a) } else { a.clone() }).collect();
    let header = private_file(&format!("Authorization: Bearer {}\n", t.token))?;
    let ca = private_file(ca_pem)?;
    let program = &command[0];
    if std::path::Path::new(program).file_name().is_some_and(|n| n == "curl") {
        let mut with = vec!["-H".to_string(), format!("@{}", header.path().display()), "--cacert".into(), ca.path().display().to_string()];
        with.append(&mut args);
        args = with;
    }
    let status = tokio::process::Command::new(program)
        .args(&args)
        .env("HANGAR_PROXY_URL", &base)
        .env("HANGAR_PROXY_TOKEN", &t.token)
        .env("HANGAR_PROXY_CA", ca.path())
        .status()
        .await
        .with_context(|| format!("cannot run {program}"))?;
    Ok(status.code().unwrap_or(1))
}
