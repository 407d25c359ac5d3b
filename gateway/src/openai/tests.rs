use super::*;

fn err(endpoint: Endpoint, body: &str) -> ApiError {
    parse_request(endpoint, body.as_bytes()).unwrap_err()
}

#[test]
fn valid_chat_requests_parse() {
    let r = parse_request(
        Endpoint::ChatCompletions,
        br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stop":["\n"]}"#,
    )
    .unwrap();
    assert_eq!(r.model, "m");
    assert!(r.stream);
}

#[test]
fn bad_requests_get_400_with_the_faulty_param() {
    let chat = Endpoint::ChatCompletions;
    let e = err(chat, "{not json");
    assert_eq!((e.status, e.code), (400, ErrorCode::InvalidJson));
    let e = err(chat, "[1,2]");
    assert_eq!((e.status, e.code), (400, ErrorCode::InvalidJson));
    let e = err(chat, r#"{"messages":[{"role":"user","content":"x"}]}"#);
    assert_eq!(
        (e.status, e.code, e.param),
        (400, ErrorCode::MissingRequiredParameter, Some("model"))
    );
    let e = err(
        chat,
        r#"{"model":7,"messages":[{"role":"user","content":"x"}]}"#,
    );
    assert_eq!(e.param, Some("model"));
    let e = err(chat, r#"{"model":"m","messages":"hi"}"#);
    assert_eq!(e.param, Some("messages"));
    let e = err(
        chat,
        r#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#,
    );
    assert_eq!(e.param, Some("stream"));
    let e = err(
        chat,
        r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":-1}"#,
    );
    assert_eq!(e.param, Some("max_tokens"));
    let e = err(
        chat,
        r#"{"model":"m","messages":[{"role":"user"}],"temperature":"hot"}"#,
    );
    assert_eq!(e.param, Some("temperature"));
    let e = err(Endpoint::Completions, r#"{"model":"m"}"#);
    assert_eq!(e.param, Some("prompt"));
}

#[test]
fn error_bodies_have_the_openai_shape() {
    let e = ApiError::model_not_found("gpt-9");
    let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], "model");
    assert!(v["error"]["message"].as_str().unwrap().contains("gpt-9"));
    let sse = String::from_utf8(e.sse_event()).unwrap();
    assert!(sse.starts_with("data: {\"error\""));
    assert!(sse.ends_with("\n\ndata: [DONE]\n\n"));
}

#[test]
fn endpoints_are_recognised_by_method_and_path() {
    assert_eq!(
        Endpoint::from_request("POST", "/v1/chat/completions").unwrap(),
        Endpoint::ChatCompletions
    );
    assert_eq!(
        Endpoint::from_request("GET", "/v1/models/").unwrap(),
        Endpoint::Models
    );
    assert_eq!(
        Endpoint::from_request("GET", "/v1/chat/completions")
            .unwrap_err()
            .status,
        405
    );
    assert_eq!(
        Endpoint::from_request("POST", "/v1/audio/speech")
            .unwrap_err()
            .status,
        404
    );
}

#[test]
fn single_model_paths_and_embeddings_are_recognised() {
    use crate::openai::model_id_of_path;
    assert_eq!(
        Endpoint::from_request("GET", "/v1/models/org/name").unwrap(),
        Endpoint::Model
    );
    assert_eq!(
        Endpoint::from_request("POST", "/v1/embeddings").unwrap(),
        Endpoint::Embeddings
    );
    assert!(!Endpoint::Embeddings.generates());
    assert!(Endpoint::from_request("GET", "/v1/embeddings").is_err());
    assert_eq!(
        model_id_of_path("/v1/models/org/name").as_deref(),
        Some("org/name")
    );
    assert_eq!(
        model_id_of_path("/v1/models/org%2Fna%20me/").as_deref(),
        Some("org/na me")
    );
    assert_eq!(model_id_of_path("/v1/models/100%").as_deref(), Some("100%"));
    assert_eq!(model_id_of_path("/v1/models/%ff"), None);
}
