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
            if NAME_PARAMS.contains(&p.name.as_str()) {
                p.schema = Some(RefOr::Ref(Ref::from_schema_name("Name")));
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
    } else if p.name == "id" && path.starts_with("/v1/operations") {
        p.schema = Some(RefOr::T(ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))).into()));
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
