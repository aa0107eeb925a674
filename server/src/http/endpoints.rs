//! The machine-facing endpoints: discovery, JWKS, token, revocation, introspection, userinfo.
//! Every failure is an RFC 6749 §5.2 JSON error.
use actix_web::http::StatusCode;
use actix_web::http::header::{self, CacheControl, CacheDirective};
use actix_web::{HttpRequest, HttpResponse, web};
use entity::tenant;

use super::{Svc, client_ip, read_form, request_info};
use crate::error::{Error, Result};
use crate::login::limits::Bucket;
use crate::oauth::scopes;
use crate::oauth::{Params, client_auth};
use crate::store::ClientWithUris;

/// The tenant of an API path; unknown tenants answer JSON 404.
async fn api_tenant(svc: &Svc, slug: &str) -> Result<tenant::Model> {
    svc.tenant(slug).await.map_err(|e| match e {
        Error::Page { .. } => Error::OAuth {
            code: "invalid_request",
            description: "unknown tenant".into(),
            status: StatusCode::NOT_FOUND,
            basic_challenge: false,
            bearer_challenge: false,
        },
        other => other,
    })
}

fn no_store(mut b: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    b.insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"));
    b
}

pub async fn discovery(svc: Svc, path: web::Path<String>) -> Result<HttpResponse> {
    let tenant = api_tenant(&svc, &path).await?;
    Ok(HttpResponse::Ok()
        .insert_header(CacheControl(vec![
            CacheDirective::Public,
            CacheDirective::MaxAge(300),
        ]))
        .content_type("application/json")
        .body(svc.discovery_json(&tenant)))
}

pub async fn jwks(svc: Svc, path: web::Path<String>) -> Result<HttpResponse> {
    let tenant = api_tenant(&svc, &path).await?;
    let keys = svc.keys.tenant_keys(&tenant.id).await?;
    Ok(HttpResponse::Ok()
        .insert_header(CacheControl(vec![
            CacheDirective::Public,
            CacheDirective::MaxAge(crate::tokens::keys::JWKS_MAX_AGE),
        ]))
        .content_type("application/jwk-set+json")
        .body(keys.jwks.clone()))
}

fn limit(svc: &Svc, req: &HttpRequest, bucket: Bucket) -> Result<()> {
    if svc.ip_limits.check(bucket, client_ip(req, svc)) {
        Ok(())
    } else {
        Err(Error::too_many(
            "too many requests from this address; retry later",
        ))
    }
}

/// The common start of the client-authenticated endpoints: rate limit, strict form body,
/// client authentication.
async fn authenticated(
    svc: &Svc,
    req: &HttpRequest,
    payload: web::Payload,
    tenant: &tenant::Model,
    bucket: Bucket,
) -> Result<(Params, ClientWithUris)> {
    limit(svc, req, bucket)?;
    let params = read_form(req, payload).await?;
    let creds = client_auth::extract(&params, authorization(req)?)?;
    let client = svc.authenticate_client(tenant, &creds).await?;
    Ok((params, client))
}

/// The one `Authorization` header, if any. Two of them (which would one mean?) or one that is
/// not visible ASCII is a malformed request, not an absent header.
fn authorization(req: &HttpRequest) -> Result<Option<&str>> {
    let mut all = req.headers().get_all(header::AUTHORIZATION);
    let Some(first) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(Error::invalid_request("more than one Authorization header"));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| Error::invalid_request("malformed Authorization header"))
}

async fn token_for(
    svc: Svc,
    req: HttpRequest,
    payload: web::Payload,
    tenant: tenant::Model,
) -> Result<HttpResponse> {
    let (params, client) = authenticated(&svc, &req, payload, &tenant, Bucket::Token).await?;
    let grant_type = params.required("grant_type")?.to_string();
    let info = request_info(&req, &svc);
    let allowed = scopes::split(&client.client.grant_types);
    let result = match grant_type.as_str() {
        "authorization_code" | "refresh_token" if !allowed.contains(&grant_type.as_str()) => Err(
            Error::unauthorized_client("this client may not use this grant type"),
        ),
        "authorization_code" => {
            svc.grant_authorization_code(&tenant, &client, &params, &info)
                .await
        }
        "refresh_token" => {
            svc.grant_refresh_token(&tenant, &client, &params, &info)
                .await
        }
        "client_credentials" => {
            svc.grant_client_credentials(&tenant, &client, &params)
                .await
        }
        _ => Err(Error::unsupported_grant_type(
            "supported: authorization_code, refresh_token, client_credentials",
        )),
    };
    let label: &'static str = match grant_type.as_str() {
        "authorization_code" => "authorization_code",
        "refresh_token" => "refresh_token",
        "client_credentials" => "client_credentials",
        _ => "other",
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    metrics::counter!("ma_idp_token_grants_total", "grant_type" => label, "outcome" => outcome)
        .increment(1);
    let body = result?;
    Ok(no_store(HttpResponse::Ok()).json(body))
}

pub async fn token(
    svc: Svc,
    req: HttpRequest,
    payload: web::Payload,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let tenant = api_tenant(&svc, &path).await?;
    token_for(svc, req, payload, tenant).await
}

/// `/alexa/token`: the token endpoint of the default tenant.
pub async fn alexa_token(
    svc: Svc,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let tenant = svc.default_tenant().await.map_err(|e| match e {
        // A database outage stays a 503; only a missing tenant is the caller's problem.
        Error::Page { .. } => Error::invalid_request("no default tenant is configured"),
        other => other,
    })?;
    token_for(svc, req, payload, tenant).await
}

pub async fn revoke(
    svc: Svc,
    req: HttpRequest,
    payload: web::Payload,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let tenant = api_tenant(&svc, &path).await?;
    let (params, client) = authenticated(&svc, &req, payload, &tenant, Bucket::Token).await?;
    svc.revoke(&tenant, &client, &params, &request_info(&req, &svc))
        .await?;
    Ok(no_store(HttpResponse::Ok()).finish())
}

pub async fn introspect(
    svc: Svc,
    req: HttpRequest,
    payload: web::Payload,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let tenant = api_tenant(&svc, &path).await?;
    let (params, client) = authenticated(&svc, &req, payload, &tenant, Bucket::Introspect).await?;
    if client.client.public {
        // RFC 7662 §2.1: the caller must authenticate, which a public client cannot.
        return Err(Error::invalid_client("public clients may not introspect"));
    }
    let answer = svc.introspect(&tenant, &client, &params).await?;
    Ok(no_store(HttpResponse::Ok()).json(answer))
}

pub async fn userinfo(
    svc: Svc,
    req: HttpRequest,
    payload: web::Payload,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let tenant = api_tenant(&svc, &path).await?;
    let header_token = authorization(&req)?.and_then(|h| {
        let (scheme, v) = h.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| v.trim().to_string())
    });
    // A POST's form body may carry the token (RFC 6750 §2.2); any other body is not read (a
    // POST with the header and no form body, as many OIDC clients send, is served; one with
    // neither is a request without credentials).
    let form_body = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let body_token = if req.method() == actix_web::http::Method::POST && form_body {
        read_form(&req, payload)
            .await?
            .get("access_token")
            .map(str::to_string)
    } else {
        None
    };
    let token = match (header_token, body_token) {
        (Some(t), None) | (None, Some(t)) => t,
        // RFC 6750 §2: one method per request.
        (Some(_), Some(_)) => {
            return Err(Error::invalid_request(
                "the access token came both in the Authorization header and in the body",
            ));
        }
        // RFC 6750 §3.1: no credentials at all get the challenge without an error code.
        (None, None) => {
            return Ok(no_store(HttpResponse::Unauthorized())
                .insert_header(("WWW-Authenticate", "Bearer realm=\"ma-idp\""))
                .finish());
        }
    };
    let claims = svc.userinfo(&tenant, &token).await?;
    Ok(no_store(HttpResponse::Ok()).json(claims))
}
