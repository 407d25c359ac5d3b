//! `telemetry`: the OTLP trace exporter and the GenAI metric names.

use std::time::Duration;

use super::super::raw::{RawOtlp, RawTelemetry};
use super::super::{ExportHeaders, OtlpConfig, OtlpProtocol, TelemetryConfig};
use super::Errors;

/// Default deadline of one export.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound of the export queue (spans).
const DEFAULT_MAX_QUEUE: usize = 4096;
/// The OTLP/HTTP path of traces.
const TRACES_PATH: &str = "/v1/traces";

/// Validates the section (absent: everything off).
pub(super) fn telemetry(errs: &mut Errors, raw: Option<&RawTelemetry>) -> TelemetryConfig {
    let Some(raw) = raw else {
        return TelemetryConfig::default();
    };
    TelemetryConfig {
        otlp: raw.otlp.as_ref().map(|o| otlp(errs, o)),
        genai_metrics: raw.genai_metrics.unwrap_or(false),
    }
}

fn otlp(errs: &mut Errors, raw: &RawOtlp) -> OtlpConfig {
    let protocol = match raw.protocol.as_deref().unwrap_or("http/protobuf") {
        "http/protobuf" => OtlpProtocol::HttpProtobuf,
        "grpc" => OtlpProtocol::Grpc,
        other => {
            errs.push(
                "telemetry.otlp.protocol",
                format!("`{other}` is not one of http/protobuf, grpc"),
            );
            OtlpProtocol::HttpProtobuf
        }
    };
    let endpoint = endpoint(errs, &raw.endpoint, protocol);
    let sample_ratio = raw.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        errs.push(
            "telemetry.otlp.sample_ratio",
            format!("{sample_ratio} is not between 0.0 and 1.0"),
        );
    }
    let service_name = raw
        .service_name
        .clone()
        .unwrap_or_else(|| "reasoning-gateway".to_string());
    if service_name.trim().is_empty() {
        errs.push("telemetry.otlp.service_name", "must not be empty");
    }
    let headers = match &raw.headers_env {
        None => ExportHeaders::default(),
        Some(var) => match std::env::var(var) {
            Ok(text) => match parse_headers(&text) {
                Ok(h) => ExportHeaders(h),
                Err(bad) => {
                    // The value may be a secret: only the offending header's position is shown.
                    errs.push(
                        "telemetry.otlp.headers_env",
                        format!("`{var}` holds an invalid header (entry {bad}): expected name=value pairs separated by commas"),
                    );
                    ExportHeaders::default()
                }
            },
            Err(_) => {
                errs.push(
                    "telemetry.otlp.headers_env",
                    format!("`{var}` is not set in the gateway's environment"),
                );
                ExportHeaders::default()
            }
        },
    };
    let timeout = errs.duration("telemetry.otlp.timeout", &raw.timeout, DEFAULT_TIMEOUT);
    let max_queue = errs.positive("telemetry.otlp.max_queue", raw.max_queue, DEFAULT_MAX_QUEUE);
    OtlpConfig {
        endpoint,
        protocol,
        sample_ratio: sample_ratio.clamp(0.0, 1.0),
        service_name,
        headers,
        capture_content: raw.capture_content.unwrap_or(false),
        timeout,
        max_queue,
    }
}

/// The collector URL: plain `http://` (the exporter carries no TLS stack; a local collector or
/// agent forwards over TLS), with `/v1/traces` added for HTTP.
fn endpoint(errs: &mut Errors, text: &str, protocol: OtlpProtocol) -> String {
    let path = "telemetry.otlp.endpoint";
    let Ok(uri) = text.parse::<http::Uri>() else {
        errs.push(path, format!("`{text}` is not a URL"));
        return String::new();
    };
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            errs.push(path, "https is not supported: point it at a local OpenTelemetry Collector (http://) that forwards over TLS");
            return String::new();
        }
        _ => {
            errs.push(
                path,
                format!("`{text}` must be an http:// URL, e.g. http://127.0.0.1:4318"),
            );
            return String::new();
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        errs.push(path, format!("`{text}` has no host"));
    }
    let base = text.trim_end_matches('/');
    match protocol {
        OtlpProtocol::HttpProtobuf if !base.ends_with(TRACES_PATH) => {
            format!("{base}{TRACES_PATH}")
        }
        _ => base.to_string(),
    }
}

/// `k=v,k2=v2` into header pairs; `Err(n)`: the n-th entry (from 1) is not a valid header.
fn parse_headers(text: &str) -> Result<Vec<(String, String)>, usize> {
    let mut out = Vec::new();
    for (i, entry) in text.split(',').enumerate() {
        if entry.trim().is_empty() {
            continue;
        }
        let (k, v) = entry.split_once('=').ok_or(i + 1)?;
        let (k, v) = (k.trim(), v.trim());
        if http::HeaderName::from_bytes(k.as_bytes()).is_err()
            || http::HeaderValue::from_str(v).is_err()
        {
            return Err(i + 1);
        }
        out.push((k.to_ascii_lowercase(), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(endpoint: &str) -> RawOtlp {
        RawOtlp {
            endpoint: endpoint.to_string(),
            protocol: None,
            sample_ratio: None,
            service_name: None,
            headers_env: None,
            capture_content: None,
            timeout: None,
            max_queue: None,
        }
    }

    #[test]
    fn http_endpoint_gets_the_traces_path_once() {
        let mut errs = Errors(Vec::new());
        let c = otlp(&mut errs, &raw("http://127.0.0.1:4318"));
        assert_eq!(c.endpoint, "http://127.0.0.1:4318/v1/traces");
        let c = otlp(&mut errs, &raw("http://127.0.0.1:4318/v1/traces"));
        assert_eq!(c.endpoint, "http://127.0.0.1:4318/v1/traces");
        let mut g = raw("http://127.0.0.1:4317");
        g.protocol = Some("grpc".into());
        assert_eq!(otlp(&mut errs, &g).endpoint, "http://127.0.0.1:4317");
        assert!(errs.0.is_empty(), "{:?}", errs.0);
        assert_eq!(c.sample_ratio, 1.0);
        assert!(!c.capture_content);
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let mut errs = Errors(Vec::new());
        let mut r = raw("https://collector:4318");
        r.protocol = Some("thrift".into());
        r.sample_ratio = Some(1.5);
        r.service_name = Some(" ".into());
        r.headers_env = Some("RG_TEST_OTLP_HEADERS_NEVER_SET".into());
        r.timeout = Some("soon".into());
        r.max_queue = Some(0);
        otlp(&mut errs, &r);
        let text = errs.0.join("\n");
        for path in [
            "telemetry.otlp.endpoint",
            "telemetry.otlp.protocol",
            "telemetry.otlp.sample_ratio",
            "telemetry.otlp.service_name",
            "telemetry.otlp.headers_env",
            "telemetry.otlp.timeout",
            "telemetry.otlp.max_queue",
        ] {
            assert!(
                text.contains(&format!("{path}:")),
                "{path} missing in {text}"
            );
        }
    }

    #[test]
    fn headers_parse_and_bad_entries_are_named_by_position() {
        assert_eq!(
            parse_headers("api-key=abc, X-Team = ml ,").unwrap(),
            vec![
                ("api-key".to_string(), "abc".to_string()),
                ("x-team".to_string(), "ml".to_string())
            ]
        );
        assert_eq!(parse_headers("a=1,novalue"), Err(2));
        assert_eq!(parse_headers("bad name=1"), Err(1));
    }
}
