//! The async job API on the proxy listener: `POST /v1/async/chat/completions`,
//! `GET|DELETE /v1/async/jobs/{id}`.

use pingora::proxy::Session;
use serde_json::{json, Value};

use super::context::RequestCtx;
use super::{intake, respond};
use crate::metrics::labels::JobResult;
use crate::openai::{parse_request, ApiError, Endpoint, ErrorCode};
use crate::state::Gateway;

/// Answers one async API request.
pub async fn handle(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> pingora::Result<()> {
    let method = session.req_header().method.as_str().to_string();
    let path = session.req_header().uri.path().to_string();
    let authorization = intake::request_header(session, "authorization");
    // The same tenant the cache would see: the job later runs as it (see `crate::tenant`).
    let tenant = {
        let header = |name: &str| intake::request_header(session, name);
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(std::net::SocketAddr::ip);
        gw.tenant_of(&header, peer).id().to_string()
    };
    let not_found =
        |id: &str| ApiError::new(ErrorCode::JobNotFound, format!("No async job `{id}`."));
    match (method.as_str(), path.as_str()) {
        ("POST", "/v1/async/chat/completions") => {
            let snapshot = gw.snapshot.load_full();
            let body = match intake::read_body(session, &snapshot.config, &gw.metrics).await {
                Ok(b) => b,
                Err(e) => return respond::error(session, ctx, e).await,
            };
            let traceparent = super::trace::job_traceparent(ctx);
            match submit(gw, &snapshot, &body, tenant, authorization, traceparent).await {
                Ok(view) => {
                    let body = serde_json::to_vec(&view).unwrap_or_default();
                    respond::json(session, ctx, 202, body).await
                }
                Err(e) => respond::error(session, ctx, e).await,
            }
        }
        (m, p) if p.starts_with("/v1/async/jobs/") => {
            let id = &p["/v1/async/jobs/".len()..];
            // In fleet mode both read Redis: while it is unreachable the answer is 503
            // `shared_state_unavailable`, never a 404 the job does not deserve.
            let view = match m {
                "GET" => gw.jobs.get(id, &tenant).await,
                "DELETE" => {
                    let v = gw.jobs.cancel(id, &tenant).await;
                    let status = v.as_ref().ok().and_then(|v| v.as_ref()?["status"].as_str());
                    if status == Some("cancelled") {
                        gw.metrics
                            .async_jobs_total
                            .with(&JobResult::Cancelled)
                            .inc();
                    }
                    v
                }
                _ => {
                    let e = ApiError::method_not_allowed(m, p, "GET or DELETE");
                    return respond::error(session, ctx, e).await;
                }
            };
            match view {
                Err(e) => respond::error(session, ctx, e).await,
                Ok(Some(v)) => {
                    respond::json(
                        session,
                        ctx,
                        200,
                        serde_json::to_vec(&v).unwrap_or_default(),
                    )
                    .await
                }
                Ok(None) => respond::error(session, ctx, not_found(id)).await,
            }
        }
        (_, "/v1/async/responses" | "/v1/async/messages") => {
            let e = ApiError::new(
                ErrorCode::UnknownUrl,
                "Async jobs take chat completions only (POST /v1/async/chat/completions); Responses and Messages requests are answered synchronously.",
            );
            respond::error(session, ctx, e).await
        }
        (m, p @ "/v1/async/chat/completions") => {
            let e = ApiError::method_not_allowed(m, p, "POST");
            respond::error(session, ctx, e).await
        }
        _ => respond::error(session, ctx, ApiError::unknown_url(&method, &path)).await,
    }
}

async fn submit(
    gw: &Gateway,
    snapshot: &crate::state::Snapshot,
    bytes: &[u8],
    tenant: String,
    authorization: Option<String>,
    traceparent: Option<String>,
) -> Result<Value, ApiError> {
    let mut value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("The request body is not valid JSON: {e}"),
        )
    })?;
    let callback = value.as_object_mut().and_then(|o| o.remove("callback_url"));
    // The same validation and routing as a synchronous request: unknown models fail now.
    let checked = serde_json::to_vec(&value).unwrap_or_default();
    let info = parse_request(Endpoint::ChatCompletions, &checked)?;
    if snapshot.routes.find(&info.model).is_none() {
        return Err(ApiError::model_not_found(&info.model));
    }
    let mut body = info.body;
    if let Some(c) = callback {
        body.insert("callback_url".into(), c);
    }
    body.remove("stream");
    body.remove("stream_options");
    let view = gw
        .jobs
        .submit(&snapshot.config, body, tenant, authorization, traceparent)
        .await?;
    Ok(json!(view))
}
