//! Turns the chat path's output (an SSE stream or a whole JSON body, from the upstream through
//! the reasoning rewriter, or a cache replay) into the client's API, streamed or whole.

use serde_json::Value;

use super::generation::Generation;
use super::{messages, responses, Api, Meta};
use crate::reasoning::sse::SseDecoder;

/// Largest chat SSE event read (as the rewriter's limit).
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;
/// Largest whole body read; beyond it the body is dropped and an error reported.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug)]
enum Input {
    Sse(SseDecoder),
    Body { buf: Vec<u8>, status: u16 },
}

#[derive(Debug)]
enum Writer {
    Responses(responses::encode::Stream),
    Messages(messages::encode::Stream),
}

/// One response's codec.
#[derive(Debug)]
pub struct Codec {
    api: Api,
    meta: Meta,
    /// The client asked for a stream.
    stream: bool,
    input: Input,
    gen: Generation,
    writer: Writer,
    ended: bool,
}

impl Codec {
    /// A codec for a translated API (`api` must be Responses or Messages).
    pub fn new(api: Api, meta: Meta, stream: bool) -> Self {
        let writer = match api {
            Api::Messages => Writer::Messages(Default::default()),
            _ => Writer::Responses(Default::default()),
        };
        Codec {
            api,
            meta,
            stream,
            input: Input::Sse(SseDecoder::new(MAX_EVENT_BYTES)),
            gen: Generation::default(),
            writer,
            ended: false,
        }
    }

    /// The response status and whether its body is an SSE stream (else one JSON body).
    pub fn begin(&mut self, status: u16, sse: bool) {
        self.input = if (200..300).contains(&status) && sse {
            Input::Sse(SseDecoder::new(MAX_EVENT_BYTES))
        } else {
            Input::Body {
                buf: Vec::new(),
                status,
            }
        };
    }

    /// The content type of what this codec writes for a response with `status`.
    pub fn content_type(&self, status: u16) -> &'static str {
        if self.stream && (200..300).contains(&status) {
            "text/event-stream"
        } else {
            "application/json"
        }
    }

    /// What the response needs besides the generation.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The generation read so far.
    pub fn generation(&self) -> &Generation {
        &self.gen
    }

    /// Feeds chat output; returns what to send the client now.
    pub fn feed(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        match &mut self.input {
            Input::Body { buf, .. } => {
                if buf.len() + input.len() <= MAX_BODY_BYTES {
                    buf.extend_from_slice(input);
                }
            }
            Input::Sse(decoder) => {
                let mut events = Vec::new();
                let res = decoder.feed(input, &mut |e| events.push(e));
                for e in events {
                    self.on_data(e.data.as_deref(), &mut out);
                }
                if res.is_err() {
                    self.fail("The upstream stream could not be read.", &mut out);
                }
            }
        }
        out
    }

    fn on_data(&mut self, data: Option<&str>, out: &mut Vec<u8>) {
        let Some(data) = data.map(str::trim) else {
            return;
        };
        if self.ended || data.is_empty() || data == "[DONE]" {
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return;
        };
        let deltas = self.gen.read_chunk(&chunk);
        if self.stream {
            for d in &deltas {
                match &mut self.writer {
                    Writer::Responses(w) => w.delta(&self.meta, &self.gen, d, out),
                    Writer::Messages(w) => w.delta(&self.meta, &self.gen, d, out),
                }
            }
        }
        if self.gen.failure.is_some() {
            self.end(out);
        }
    }

    fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        self.gen.failure = Some(super::generation::Failure {
            status: 502,
            code: None,
            message: message.to_string(),
        });
        self.end(out);
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ended = true;
        if self.stream {
            match &mut self.writer {
                Writer::Responses(w) => w.end(&self.meta, &self.gen, out),
                Writer::Messages(w) => w.end(&self.meta, &self.gen, out),
            }
        } else {
            let v = match self.api {
                Api::Messages => messages::encode::body(&self.meta, &self.gen),
                _ => responses::encode::body(&self.meta, &self.gen),
            };
            out.extend_from_slice(&serde_json::to_vec(&v).unwrap_or_default());
        }
    }

    /// End of the chat output: the rest of the client's response.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        match std::mem::replace(&mut self.input, Input::Sse(SseDecoder::new(1))) {
            Input::Sse(mut decoder) => {
                let mut events = Vec::new();
                let _ = decoder.finish(&mut |e| events.push(e));
                for e in events {
                    self.on_data(e.data.as_deref(), &mut out);
                }
                self.end(&mut out);
            }
            Input::Body { buf, status } => {
                if !(200..300).contains(&status) {
                    // An error answered before any output: the client's API's error body.
                    self.ended = true;
                    return match self.api {
                        Api::Messages => messages::error_body(status, &buf),
                        _ => buf,
                    };
                }
                match serde_json::from_slice::<Value>(&buf) {
                    Ok(body) => {
                        let deltas = self.gen.read_completion(&body, status);
                        if self.stream {
                            for d in &deltas {
                                match &mut self.writer {
                                    Writer::Responses(w) => {
                                        w.delta(&self.meta, &self.gen, d, &mut out);
                                    }
                                    Writer::Messages(w) => {
                                        w.delta(&self.meta, &self.gen, d, &mut out);
                                    }
                                }
                            }
                        }
                        self.end(&mut out);
                    }
                    Err(_) => self.fail(
                        "The upstream answered something that is not a chat completion.",
                        &mut out,
                    ),
                }
            }
        }
        out
    }

    /// A whole response the gateway wrote itself (cache replay, error) in the client's API.
    pub fn whole(&mut self, status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
        self.begin(status, content_type.starts_with("text/event-stream"));
        let mut out = self.feed(body);
        out.extend_from_slice(&self.finish());
        out
    }
}

#[cfg(test)]
mod tests;
