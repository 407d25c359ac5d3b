//! The translated client APIs (see [`crate::api`]) in the request path: the client's request
//! decoded into chat before routing, the codec set up after it, the upstream's path and key,
//! and the response's headers and bytes in the client's API.

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use serde_json::Value;

use super::context::RequestCtx;
use super::intake::Routed;
use crate::api::{messages, Api, Codec, Meta, Translated};
use crate::config::ParserKind;
use crate::openai::{ApiError, ErrorCode};

/// A translated request: what the translation decided, and the client's own body (for a pool
/// that serves the API itself).
pub struct Decoded {
    translated: Translated,
    original: Bytes,
}

/// For a translated API, the chat body to route instead of the client's, and what the
/// translation decided; other APIs' bodies come back as they are.
///
/// A request the gateway cannot translate (`previous_response_id`, images, built-in tools…)
/// is still routed, by its model, with a chat body that holds no problem (so the cache never
/// sees it): a pool that serves the API itself gets it as it is, any other pool gets the
/// translation's error (see [`prepare`]).
pub fn decode_request(api: Option<Api>, body: Bytes) -> Result<(Bytes, Option<Decoded>), ApiError> {
    let Some(api) = api.filter(|a| a.translated()) else {
        return Ok((body, None));
    };
    let t = match crate::api::decode(api, &body) {
        Ok(t) => t,
        Err(err) => untranslatable(&body, err)?,
    };
    let chat = serde_json::to_vec(&t.chat).map_err(|e| {
        ApiError::new(
            ErrorCode::InternalError,
            format!("encoding the chat request failed: {e}"),
        )
    })?;
    let decoded = Decoded {
        translated: t,
        original: body,
    };
    Ok((Bytes::from(chat), Some(decoded)))
}

/// A request that could not be translated, routed by its `model` and `stream` alone (the
/// error itself when it has no model to route by).
fn untranslatable(body: &[u8], err: ApiError) -> Result<Translated, ApiError> {
    let Ok(Value::Object(client)) = serde_json::from_slice::<Value>(body) else {
        return Err(err);
    };
    let Some(model) = client.get("model").filter(|m| m.is_string()) else {
        return Err(err);
    };
    let mut chat = serde_json::Map::new();
    chat.insert("model".into(), model.clone());
    if let Some(s) = client.get("stream").filter(|s| s.is_boolean()) {
        chat.insert("stream".into(), s.clone());
    }
    // An empty problem: the cache treats the request as uncacheable.
    chat.insert(
        "messages".into(),
        serde_json::json!([{"role": "user", "content": ""}]),
    );
    Ok(Translated {
        chat,
        show_reasoning: true,
        reasoning_budget: None,
        signed: Vec::new(),
        reasoning_summary: false,
        untranslatable: Some(err),
    })
}

/// After routing: the codec for the client's API, and the client's reasoning budget (which
/// needs the tokens as they come, so a JSON request is streamed from the upstream).
pub fn prepare(
    ctx: &mut RequestCtx,
    routed: &mut Routed,
    decoded: Decoded,
) -> Result<(), ApiError> {
    let Some(api) = ctx.api else {
        return Ok(());
    };
    let Decoded {
        translated: t,
        original,
    } = decoded;
    let stop_sequences = match t.chat.get("stop") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let meta = Meta {
        id: ctx.request_id.clone(),
        model: routed.info.model.clone(),
        created: crate::util::now_unix(),
        show_reasoning: t.show_reasoning,
        stop_sequences,
        summary: t.reasoning_summary,
    };
    // Also for a pool that serves the API itself: the gateway's own answers (errors, cache
    // replays) are written in the client's API.
    ctx.codec = Some(Codec::new(api, meta, routed.info.stream));
    if routed.pool.config.api.contains(&api) {
        if t.untranslatable.is_some() {
            // The shadow would get the placeholder chat body, not the request.
            routed.shadow = None;
        }
        passthrough(ctx, routed, &original);
        return Ok(());
    }
    if let Some(err) = t.untranslatable {
        return Err(err);
    }
    // Only here: thinking blocks a pool serving Messages itself signed go back to it as they are.
    messages::verify_signatures(&t)?;
    let Some(budget) = t.reasoning_budget else {
        return Ok(());
    };
    if routed.route.reasoning.parser == ParserKind::Passthrough {
        return Ok(());
    }
    ctx.reasoning_budget = Some(budget);
    if !routed.info.stream && !routed.aggregate {
        routed.info.body.insert("stream".into(), Value::Bool(true));
        routed.info.body.insert(
            "stream_options".into(),
            serde_json::json!({"include_usage": true}),
        );
        if let Ok(b) = serde_json::to_vec(&routed.info.body) {
            routed.upstream_body = Bytes::from(b);
            routed.aggregate = true;
        }
    }
    Ok(())
}

/// The client's body for a pool that serves its API: as sent, but for the route's model rewrite.
fn passthrough(ctx: &mut RequestCtx, routed: &mut Routed, original: &Bytes) {
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(original) else {
        return;
    };
    if let Some(model) = routed.info.body.get("model") {
        body.insert("model".into(), model.clone());
    }
    let Ok(bytes) = serde_json::to_vec(&body) else {
        return;
    };
    ctx.passthrough = true;
    routed.upstream_body = Bytes::from(bytes);
    routed.aggregate = false;
    routed.usage_injected = false;
    // The shadow copy stays a chat request (its pool may speak only chat).
}

/// The upstream request of a translated API: the chat path, and the client's `x-api-key` as
/// the bearer token a chat server expects (a pool's own key still replaces it).
pub fn upstream_request(ctx: &RequestCtx, req: &mut RequestHeader) -> pingora::Result<()> {
    if ctx.passthrough || !ctx.api.is_some_and(Api::translated) {
        return Ok(());
    }
    req.set_uri(http::Uri::from_static("/v1/chat/completions"));
    let key = req
        .headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let (None, Some(k)) = (req.headers.get("authorization"), key) {
        req.insert_header("authorization", format!("Bearer {k}"))?;
    }
    for h in ["x-api-key", "anthropic-version", "anthropic-beta"] {
        req.remove_header(h);
    }
    Ok(())
}

/// The response header of a translated API: the codec learns the status and body framing.
pub fn upstream_response(
    ctx: &mut RequestCtx,
    resp: &mut ResponseHeader,
    status: u16,
) -> pingora::Result<()> {
    if ctx.passthrough {
        if (200..300).contains(&status) {
            if let (Some(api), Some(route)) = (ctx.api, ctx.route.as_ref()) {
                let sse = resp
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|c| c.starts_with("text/event-stream"));
                ctx.meter = Some(crate::api::meter::Meter::new(
                    api,
                    sse,
                    &route.reasoning,
                    ctx.response_format.take(),
                ));
                if sse {
                    // A budget cut ends the stream with an event of the gateway's.
                    resp.remove_header("content-length");
                }
            }
        }
        return Ok(());
    }
    let Some(codec) = ctx.codec.as_mut() else {
        return Ok(());
    };
    let sse = ctx.aggregator.is_none()
        && resp
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
    codec.begin(status, sse);
    resp.remove_header("content-length");
    resp.insert_header("content-type", codec.content_type(status))?;
    Ok(())
}

/// Chat output on its way to the client, in the client's API (unchanged for chat clients).
pub fn client_bytes(ctx: &mut RequestCtx, out: Vec<u8>, end: bool) -> Vec<u8> {
    let Some(codec) = ctx.codec.as_mut().filter(|_| !ctx.passthrough) else {
        return out;
    };
    let mut b = codec.feed(&out);
    if end {
        b.extend_from_slice(&codec.finish());
    }
    b
}

/// A whole response the gateway wrote itself (error, cache replay) in the client's API.
pub fn local_body(
    ctx: &mut RequestCtx,
    status: u16,
    content_type: &str,
    body: Vec<u8>,
) -> (String, Vec<u8>) {
    if let Some(codec) = ctx.codec.as_mut() {
        let out = codec.whole(status, content_type, &body);
        return (codec.content_type(status).to_string(), out);
    }
    if ctx.api == Some(Api::Messages) && status >= 400 {
        return (
            "application/json".into(),
            messages::error_body(status, &body),
        );
    }
    (content_type.to_string(), body)
}

/// A passed-through response's body on its way to the client: measured, step timeouts counted,
/// and ended with an error event in the client's API once the reasoning passes the route's
/// `max_reasoning_tokens` (streams only: a whole body has been generated when it arrives).
/// `false` when the response is not passed through.
pub fn passthrough_body(ctx: &mut RequestCtx, body: &mut Option<Bytes>, end: bool) -> bool {
    let Some(meter) = ctx.meter.as_mut() else {
        return false;
    };
    let now = std::time::Instant::now();
    let input = body.take().unwrap_or_default();
    let step_timeout = ctx.route.as_ref().and_then(|r| r.reasoning.step_timeout);
    if let (Some(limit), Some(last)) = (step_timeout, ctx.last_body_at) {
        if !input.is_empty() && meter.in_reasoning() && now.duration_since(last) > limit {
            ctx.step_timeouts += 1;
        }
    }
    if !input.is_empty() {
        ctx.last_body_at = Some(now);
    }
    let mut out = meter.feed(&input);
    if ctx.first_answer_at.is_none() && meter.answer_started() {
        ctx.first_answer_at = Some(now);
    }
    if meter.take_budget_alert() {
        let err = ApiError::new(
            ErrorCode::ReasoningBudgetExceeded,
            "The reasoning exceeded the route's max_reasoning_tokens; generation was stopped.",
        );
        out.extend_from_slice(&meter.abort(&err));
        ctx.error = Some(err);
        ctx.aborted = true;
        ctx.stop_upstream();
    } else if end {
        out.extend_from_slice(&meter.finish());
    }
    ctx.response_bytes += out.len();
    *body = Some(Bytes::from(out));
    true
}

/// The whole reasoning and answer of a finished response, and the model that wrote it, for the
/// cache: from the chat path's rewriter, or from a passed-through response.
pub fn generated_text(ctx: &RequestCtx) -> Option<(String, String, String)> {
    if let Some(rw) = ctx.rewriter.as_ref() {
        let (reasoning, answer) = rw.full_text()?;
        return Some((reasoning, answer, rw.response_model().unwrap_or_default()));
    }
    let meter = ctx.meter.as_ref()?;
    // A Messages upstream asked not to think answers without reasoning: not an entry to replay
    // to clients that asked for it.
    let codec = ctx.codec.as_ref()?;
    if ctx.api == Some(Api::Messages) && !codec.meta().show_reasoning {
        return None;
    }
    let (reasoning, answer) = meter.full_text()?;
    Some((reasoning, answer, meter.model().unwrap_or_default()))
}
