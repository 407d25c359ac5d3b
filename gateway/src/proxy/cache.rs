//! The cache in the request path: lookup and replay before choosing a peer, storage after a
//! complete, verified response.

use std::sync::Arc;

use pingora::proxy::Session;
use serde_json::Value;

use super::context::RequestCtx;
use super::respond;
use crate::openai::Endpoint;
use crate::reasoning::Report;
use crate::state::Gateway;
use reasoning_cache::{replay, Completed, Lookup, Query};

/// Looks the routed request up; `Ok(true)` when a hit was replayed.
pub async fn lookup(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    routed: &super::intake::Routed,
    endpoint: Endpoint,
) -> pingora::Result<bool> {
    let (Some(settings), Some(cache)) = (routed.route.cache.as_ref(), gw.cache.get()) else {
        return Ok(false);
    };
    if endpoint != Endpoint::ChatCompletions {
        return Ok(false);
    }
    let started = std::time::Instant::now();
    let lookup = {
        let header = |name: &str| super::intake::request_header(session, name);
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(std::net::SocketAddr::ip);
        let tenant = gw.tenant_of(&header, peer);
        let served = reasoning_cache::key::Served {
            upstream: &routed.pool.config.name,
            variant: routed.variant.as_deref(),
            model: routed
                .info
                .body
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        };
        cache
            .lookup_staged(&Query {
                route: &routed.route.name,
                served,
                settings,
                body: &routed.info.body,
                tenant: tenant.tenant.as_deref(),
                header: &header,
            })
            .await
    };
    let (lookup, stages) = lookup;
    ctx.cache_header = Some(lookup.header());
    super::trace::cache_lookup(ctx, started, stages);
    match lookup {
        Lookup::Hit {
            entry,
            similarity,
            reason,
        } => {
            ctx.cache_similarity = Some(similarity);
            ctx.cache_reason = Some(reason);
            ctx.route = Some(routed.route.clone());
            ctx.variant = routed.variant.clone();
            let include_usage = routed
                .info
                .body
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                == Some(&Value::Bool(true));
            let model = if entry.record.model.is_empty() {
                routed.info.model.as_str()
            } else {
                entry.record.model.as_str()
            };
            let id = format!("chatcmpl-{}", ctx.request_id);
            let shape = replay::Shape {
                stream: routed.info.stream,
                include_usage,
                reasoning_fields: routed.route.reasoning.output_field.names(),
                model,
                id: &id,
                created: crate::util::now_unix(),
            };
            let body = replay::body(&entry.record, &shape);
            let content_type = if routed.info.stream {
                "text/event-stream"
            } else {
                "application/json"
            };
            let replay_started = std::time::Instant::now();
            respond::local(session, ctx, 200, content_type, body).await?;
            super::trace::replay(ctx, replay_started);
            Ok(true)
        }
        Lookup::Miss {
            pending,
            best,
            rejected,
        } => {
            ctx.cache_pending = Some(pending);
            ctx.cache_similarity = best;
            ctx.cache_reason = rejected;
            Ok(false)
        }
        Lookup::Bypass(pending) => {
            ctx.cache_pending = pending;
            Ok(false)
        }
        Lookup::Uncacheable | Lookup::NoCredentials => Ok(false),
    }
}

/// Stores the response when it is complete and verified: upstream 200, no gateway error or
/// abort, one choice that finished with `stop`, reasoning terminated, every check passed.
pub fn store(gw: &Arc<Gateway>, ctx: &mut RequestCtx, report: Option<&Report>) {
    let Some(pending) = ctx.cache_pending.take() else {
        return;
    };
    let (Some(cache), Some(report)) = (gw.cache.get(), report) else {
        return;
    };
    let complete = ctx.upstream_status == Some(200)
        && ctx.error.is_none()
        && !ctx.aborted
        && ctx.step_timeouts == 0
        && report.finish_reason.as_deref() == Some("stop")
        && !report.unterminated
        && report.failed().next().is_none();
    // An answer the reasoning budget shaped (closed early, or made to think longer) belongs to
    // that budget: another request for the same problem may ask for another effort.
    let shaped = ctx.budget_actions.label().is_some();
    if !complete || shaped {
        return;
    }
    // The chat path's text, or a passed-through response's (Responses, Messages).
    let Some((reasoning, answer, model)) = super::api::generated_text(ctx) else {
        return;
    };
    if answer.trim().is_empty() {
        return;
    }
    let usage = report.prompt_tokens.map(|p| reasoning_cache::store::Usage {
        prompt_tokens: p,
        completion_tokens: report.reasoning_tokens + report.answer_tokens,
        reasoning_tokens: report.reasoning_tokens,
    });
    let done = Completed {
        reasoning,
        answer,
        model,
        usage,
    };
    cache.insert(pending, done);
}
