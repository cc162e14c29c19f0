//! Completes the generated OpenAPI document with what holds for every route, so each
//! operation documents every status it answers (schemathesis checks this against a live
//! hub: `scripts/schemathesis`):
//! - 400 `invalid_argument` wherever there are path or query parameters or a body;
//! - 401 `unauthenticated`, 403 `forbidden` and 429 `too_many_requests` (with
//!   `Retry-After`) on every route behind a token; 401 on the agent routes (mTLS);
//! - 404 `not_found` wherever a path names something;
//! - query parameters declared as such (`IntoParams` structs default to the path);
//! - path parameters typed: names follow [`hangar_types::Name`]'s pattern, operation
//!   ids are UUIDs, token ids follow [`hangar_types::TokenId`]'s alphabet.
//!
//! Handlers keep documenting what is particular to them (409, 422, 503, 202...).

use utoipa::openapi::path::{Operation, Parameter, ParameterIn};
use utoipa::openapi::{Ref, RefOr, Response, ResponseBuilder};

/// Path parameters that are [`hangar_types::Name`]s.
const NAME_PARAMS: [&str; 5] = ["tenant", "name", "pool", "host", "instance"];

pub(super) fn complete(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        for op in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch].into_iter().flatten() {
            complete_operation(path, op);
        }
    }
    if let Some(c) = doc.components.as_mut() {
        for (name, schema) in c.schemas.iter_mut() {
            constrain_properties(name, schema);
        }
    }
    link_created_names(doc);
}

/// The path parameters of a path template, in order.
fn path_params(path: &str) -> Vec<&str> {
    path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).collect()
}

/// OpenAPI links from each create (`POST P` whose body must name the new object) to every
/// operation on it (`P/{x}...` with no path parameter but P's and x): `x` is the
/// body's `name`, P's parameters are the request's. Clients and schemathesis's
/// stateful phase then chain create → use by name (guessing would pair a tenant's
/// path parameter with its `id`, which is no name).
/// Operations that read the latest run of an action on an object, not the object.
const LATEST_RUN_OF: &[&str] = &["move_status", "evacuation_status"];

fn link_created_names(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::link::LinkBuilder;
    let named_bodies: Vec<String> = doc
        .components
        .iter()
        .flat_map(|c| c.schemas.iter())
        .filter(|(_, s)| matches!(s, RefOr::T(utoipa::openapi::schema::Schema::Object(o)) if o.required.iter().any(|r| r == "name")))
        .map(|(n, _)| format!("#/components/schemas/{n}"))
        .collect();
    let mut targets: Vec<(String, String)> = vec![];
    for (path, item) in doc.paths.paths.iter() {
        for op in [&item.get, &item.put, &item.post, &item.delete, &item.patch].into_iter().flatten() {
            if let Some(id) = &op.operation_id {
                targets.push((path.clone(), id.clone()));
            }
        }
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        let Some(op) = item.post.as_mut() else { continue };
        let body = op.request_body.as_ref().and_then(|b| b.content.get("application/json")).and_then(|c| c.schema.as_ref());
        if !matches!(body, Some(RefOr::Ref(r)) if named_bodies.contains(&r.ref_location)) {
            continue;
        }
        let mine = path_params(path);
        let mut links = vec![];
        for (target, id) in &targets {
            // The latest run of something done to the object (a move, an evacuation):
            // a new object has none yet, so it is 404 by design, not a lost object.
            if LATEST_RUN_OF.contains(&id.as_str()) {
                continue;
            }
            let Some(rest) = target.strip_prefix(path.as_str()).and_then(|r| r.strip_prefix("/{")) else { continue };
            let Some((created, _)) = rest.split_once('}') else { continue };
            if !path_params(target).iter().all(|p| *p == created || mine.contains(p)) {
                continue;
            }
            // utoipa 5 writes `Link::operation_id` as `operation_id`; the field's name in
            // OpenAPI is `operationId`, set here through the (flattened) extensions.
            let operation_id = utoipa::openapi::extensions::Extensions::from_iter([("operationId", id.clone())]);
            let mut link = LinkBuilder::new().extensions(Some(operation_id)).parameter(created, "$request.body#/name");
            for p in &mine {
                link = link.parameter(*p, format!("$request.path.{p}"));
            }
            links.push((id.clone(), link.build()));
        }
        for (status, response) in op.responses.responses.iter_mut() {
            if let (true, RefOr::T(r)) = (status.starts_with('2'), response) {
                for (id, link) in &links {
                    r.links.insert(id.clone(), RefOr::T(link.clone()));
                }
            }
        }
    }
}

/// Limits the handlers check that the types' derived schemas do not say, per property
/// (`*`: every schema with that property) or per schema and property: what a schema-valid
/// body holds is then accepted (schemathesis's positive data acceptance check).
/// A path in an instance's volume as `types::files::volume_path` takes it: `/home`, a
/// path under it, or one relative to it; no `..` segment, no NUL; at most 4096 bytes
/// (1024 characters of up to 4 bytes each).
const VOLUME_PATH_LIMITS: &str = r#"{"minLength": 1, "maxLength": 1024, "pattern": "^(/+home(/+(?:[^./\u0000][^/\u0000]*|\\.[^./\u0000][^/\u0000]*|\\.\\.[^/\u0000]+|\\.))*/*|(?:[^./\u0000][^/\u0000]*|\\.[^./\u0000][^/\u0000]*|\\.\\.[^/\u0000]+|\\.)(/+(?:[^./\u0000][^/\u0000]*|\\.[^./\u0000][^/\u0000]*|\\.\\.[^/\u0000]+|\\.))*/*)$"}"#;

const PROPERTY_LIMITS: &[(&str, &str, &str)] = &[
    ("*", "env", r#"{"propertyNames": {"type": "string", "minLength": 1, "pattern": "^[^=\u0000]+$"}, "additionalProperties": {"type": "string", "pattern": "^[^\u0000]*$"}}"#),
    ("*", "command", r#"{"items": {"type": "string", "pattern": "^[^\u0000]*$"}}"#),
    ("*", "image", r#"{"pattern": "^(host|[a-z]([a-z0-9-]{0,61}[a-z0-9])?)$"}"#),
    ("InstanceCreate", "vcpus", r#"{"minimum": 1, "maximum": 256}"#),
    ("InstanceCreate", "mem_mib", r#"{"minimum": 16, "maximum": 1048576}"#),
    ("InstanceCreate", "disk_mib", r#"{"minimum": 16, "maximum": 16777216}"#),
    ("PoolCreate", "vcpus", r#"{"minimum": 1, "maximum": 256}"#),
    ("PoolCreate", "mem_mib", r#"{"minimum": 16, "maximum": 1048576}"#),
    ("PoolCreate", "disk_mib", r#"{"minimum": 16, "maximum": 16777216}"#),
    ("InstanceSpec", "vcpus", r#"{"minimum": 1, "maximum": 256}"#),
    ("InstanceSpec", "mem_mib", r#"{"minimum": 16, "maximum": 1048576}"#),
    ("InstanceSpec", "disk_mib", r#"{"minimum": 16, "maximum": 16777216}"#),
    ("ExecRequest", "timeout_secs", r#"{"minimum": 1}"#),
    ("ProxyTokenCreate", "port", r#"{"minimum": 1, "maximum": 65535}"#),
    ("ProxyTokenCreate", "ttl_secs", r#"{"minimum": 1, "maximum": 2592000}"#),
    // types::backups::KEEP_MAX.
    ("BackupPolicy", "keep_last", r#"{"minimum": 1, "maximum": 100000}"#),
    ("BackupPolicy", "keep_daily", r#"{"minimum": 1, "maximum": 100000}"#),
    ("BackupPolicy", "keep_weekly", r#"{"minimum": 1, "maximum": 100000}"#),
    ("BackupPolicy", "keep_monthly", r#"{"minimum": 1, "maximum": 100000}"#),
    // Canonical base64 (the decoder refuses stray trailing bits) of at most 64 KiB.
    ("SecretSet", "value_b64", r#"{"maxLength": 87384, "pattern": "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$"}"#),
    ("SshKeyAdd", "name", r#"{"pattern": "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"}"#),
    // The pattern spells out the ed25519 form only (a blob that names its type and holds
    // 32 bytes); the description names the other types the hub takes.
    (
        "SshKeyAdd",
        "public_key",
        r#"{"pattern": "^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]{43}( [A-Za-z0-9@._-]{1,100})?$", "description": "One OpenSSH public key line, `TYPE BASE64 [COMMENT]` (the .pub file). The pattern is the ssh-ed25519 form; ecdsa-sha2-nistp256, -nistp384, -nistp521 and ssh-rsa are taken too, when their data names their type."}"#,
    ),
    // Less than the parser takes (any order, up to a year), never more.
    (
        "SnapshotScheduleSet",
        "schedule",
        r#"{"pattern": "^(off|(hourly|daily|every=([1-9][0-9]{0,4}m|[1-9][0-9]{0,2}h|[1-9][0-9]?d))(,keep=([1-9][0-9]{0,2}|1000))?)$"}"#,
    ),
    ("InstanceMove", "to", r#"{"pattern": "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"}"#),
    ("InstanceMove", "keep_source_secs", r#"{"minimum": 0, "maximum": 604800}"#),
    ("HostEvacuate", "parallel", r#"{"minimum": 1, "maximum": 16}"#),
    // A secret named twice is refused (400): the list is a set.
    ("*", "secrets", r#"{"uniqueItems": true}"#),
    ("CopyEnd", "tenant", r#"{"pattern": "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"}"#),
    ("CopyEnd", "instance", r#"{"pattern": "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"}"#),
    ("CopyEnd", "path", VOLUME_PATH_LIMITS),
];

fn constrain_properties(schema_name: &str, schema: &mut RefOr<utoipa::openapi::schema::Schema>) {
    use utoipa::openapi::schema::Schema;
    let RefOr::T(Schema::Object(o)) = schema else { return };
    for (name, prop) in o.properties.iter_mut() {
        for (_, _, limits) in PROPERTY_LIMITS.iter().filter(|(s, p, _)| (*s == "*" || *s == schema_name) && p == name) {
            let RefOr::T(_) = prop else { continue };
            let mut v = serde_json::to_value(&*prop).expect("a schema serializes");
            let extra: serde_json::Value = serde_json::from_str(limits).expect("PROPERTY_LIMITS holds JSON");
            if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
                v.extend(extra.clone());
            }
            *prop = serde_json::from_value(v).expect("a constrained schema is a schema");
        }
    }
}

/// Numbers with no fraction become integers: JSON Schema counts `22.0` as an integer,
/// serde does not, so a body the document allows would otherwise be refused.
pub(super) fn integral_numbers(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0) {
                if f >= 0.0 && f < u64::MAX as f64 {
                    *v = Value::from(f as u64);
                } else if f < 0.0 && f >= i64::MIN as f64 {
                    *v = Value::from(f as i64);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(integral_numbers),
        Value::Object(o) => o.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

fn error(description: &str) -> RefOr<Response> {
    let content = utoipa::openapi::ContentBuilder::new().schema(Some(Ref::from_schema_name("ApiError"))).build();
    RefOr::T(ResponseBuilder::new().description(description).content("application/json", content).build())
}

fn complete_operation(path: &str, op: &mut Operation) {
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let agent = path.starts_with("/v1/agent/") && op.description.as_deref().is_some_and(|d| d.contains("mTLS"));
    let params = op.parameters.get_or_insert_with(Vec::new);
    let mut names_something = false;
    for p in params.iter_mut() {
        // `IntoParams` structs default to path parameters: those not in the path are
        // the query's.
        if p.parameter_in == ParameterIn::Path && !path.contains(&format!("{{{}}}", p.name)) {
            p.parameter_in = ParameterIn::Query;
        }
        if p.parameter_in == ParameterIn::Query {
            not_null(p);
            // (`name` in a query is not a name of ours: `backup-files`' is a file pattern.)
            if NAME_PARAMS.contains(&p.name.as_str()) && p.name != "name" {
                p.schema = Some(RefOr::Ref(Ref::from_schema_name("Name")));
            }
            if p.name == "name" && path.ends_with("/backup-files") {
                use utoipa::openapi::schema::{ObjectBuilder, Type};
                p.schema = Some(RefOr::T(ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[^/]{1,255}$")).min_length(Some(1)).max_length(Some(255)).into()));
            }
            if p.name == "path" && path.ends_with("/files") {
                let mut v = serde_json::json!({"type": "string"});
                let extra: serde_json::Value = serde_json::from_str(VOLUME_PATH_LIMITS).expect("VOLUME_PATH_LIMITS is JSON");
                if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
                    v.extend(extra.clone());
                }
                p.schema = Some(serde_json::from_value(v).expect("a path schema is a schema"));
            }
            // A tenant named in the query may not exist (or not be the caller's).
            names_something |= p.name == "tenant";
        }
        if p.parameter_in == ParameterIn::Path {
            names_something = true;
            type_path_param(path, p);
        }
    }
    let has_input = !params.is_empty() || op.request_body.is_some();
    if op.parameters.as_ref().is_some_and(|p| p.is_empty()) {
        op.parameters = None;
    }
    let r = &mut op.responses.responses;
    let mut add = |status: &str, why: &str| {
        r.entry(status.to_string()).or_insert_with(|| error(why));
    };
    if has_input {
        add("400", "a parameter or the body is invalid (the message names it)");
    }
    if secured || agent {
        add("401", "no valid credentials: a missing, unknown, expired or revoked token (or host certificate)");
    }
    if secured {
        add("403", "the token's scope does not allow this");
        add("429", "the token is over its request rate: retry after `Retry-After` seconds");
    }
    if names_something {
        add("404", "not found (other tenants' objects are not found either)");
    }
}

fn type_path_param(path: &str, p: &mut Parameter) {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, KnownFormat, Type};
    if NAME_PARAMS.contains(&p.name.as_str()) {
        p.schema = Some(RefOr::Ref(Ref::from_schema_name("Name")));
    } else if p.name == "id" && (path.starts_with("/v1/operations") || path.starts_with("/v1/backup-operations")) {
        p.schema = Some(RefOr::T(ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))).into()));
    } else if p.name == "backup" {
        p.schema = Some(RefOr::T(ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[0-9a-f]{1,64}$")).into()));
    } else if p.name == "id" && path.starts_with("/v1/tokens") {
        p.schema = Some(RefOr::T(ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[a-z0-9-]{1,64}$")).min_length(Some(1)).max_length(Some(64)).into()));
    }
}

/// An optional query parameter is absent, never `null` (a query string has no null).
fn not_null(p: &mut Parameter) {
    use utoipa::openapi::schema::{Schema, SchemaType, Type};
    if let Some(RefOr::T(Schema::Object(o))) = p.schema.as_mut() {
        let rest: Vec<Type> = match &o.schema_type {
            SchemaType::Array(types) => types.iter().filter(|t| **t != Type::Null).cloned().collect(),
            _ => return,
        };
        if let [only] = rest.as_slice() {
            o.schema_type = SchemaType::Type(only.clone());
        }
    }
}
