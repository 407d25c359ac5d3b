//! Engine errors and their OpenAI error bodies.

use serde_json::json;

/// Everything that can go wrong loading the model or serving a request.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// `model_dir` is not an existing directory.
    #[error("model directory {0} does not exist (models are never fetched from a hub; run `make models`)")]
    NoModelDir(String),
    /// The GGUF file is missing.
    #[error("model file {0} does not exist (run `make models`)")]
    NoModelFile(String),
    /// The file does not start with the GGUF magic.
    #[error("{0} is not a GGUF file (its first bytes are not `GGUF`)")]
    NotGguf(String),
    /// Reading the file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Converting the weights to SIMD-friendly types failed.
    #[error("cannot requantize the model: {0}")]
    Requantize(String),
    /// mistral.rs refused to load the model.
    #[error("mistral.rs could not load the model: {0}")]
    Load(String),
    /// The request asks for something the engine cannot do, or is malformed.
    #[error("{message}")]
    BadRequest {
        /// The field at fault.
        param: Option<&'static str>,
        /// What is wrong.
        message: String,
    },
    /// Generation failed.
    #[error("generation failed: {0}")]
    Generation(String),
}

impl EngineError {
    /// A 400 about `param`.
    pub fn bad(param: &'static str, message: impl Into<String>) -> Self {
        EngineError::BadRequest {
            param: Some(param),
            message: message.into(),
        }
    }

    /// HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            EngineError::BadRequest { .. } => 400,
            _ => 500,
        }
    }

    /// OpenAI error body.
    pub fn body(&self) -> Vec<u8> {
        let (kind, code, param) = match self {
            EngineError::BadRequest { param, .. } => {
                ("invalid_request_error", "unsupported_parameter", *param)
            }
            _ => ("server_error", "engine_error", None),
        };
        let v = json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}});
        serde_json::to_vec(&v).unwrap_or_default()
    }
}
