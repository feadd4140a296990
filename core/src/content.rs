//! What the inventory knows about a piece of content.

use crate::hash::ContentHash;
use crate::ids::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Facts about content that do not depend on where it is stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContentMeta {
    /// File extension without the dot, lower case (`mp4`, `jpg`).
    pub ext: String,
    pub size: u64,
}

impl ContentMeta {
    pub fn content_type(&self) -> &'static str {
        content_type(&self.ext)
    }
}

/// One inventory record: the content and the stores holding a copy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContentRecord {
    pub hash: ContentHash,
    pub meta: ContentMeta,
    pub stores: BTreeSet<NodeId>,
}

/// Why an extension is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadExtension(pub String);

impl std::fmt::Display for BadExtension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "extension {:?} must be 1 to 16 characters of a-z and 0-9",
            self.0
        )
    }
}

impl std::error::Error for BadExtension {}

/// Lower-cases and checks an extension (a leading dot is allowed and dropped).
/// The most hashes one exists query may ask about: the question travels to
/// the authority as one message, and its answer back.
pub const MAX_EXISTS_HASHES: usize = 256;

pub fn normalize_ext(ext: &str) -> Result<String, BadExtension> {
    let e = ext.trim_start_matches('.').to_ascii_lowercase();
    let ok = (1..=16).contains(&e.len())
        && e.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(e)
    } else {
        Err(BadExtension(ext.to_string()))
    }
}

/// Content type for an extension; `application/octet-stream` when unknown.
pub fn content_type(ext: &str) -> &'static str {
    match ext {
        "txt" => "text/plain; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css",
        "js" => "text/javascript",
        "json" => "application/json",
        "xml" => "application/xml",
        "csv" => "text/csv",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "mov" => "video/quicktime",
        "avi" => "video/x-msvideo",
        "m3u8" => "application/vnd.apple.mpegurl",
        "ts" => "video/mp2t",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_normalized_or_refused() {
        assert_eq!(normalize_ext(".MP4"), Ok("mp4".to_string()));
        assert_eq!(normalize_ext("tar"), Ok("tar".to_string()));
        assert!(normalize_ext("").is_err());
        assert!(normalize_ext("../etc").is_err());
        assert!(normalize_ext("a b").is_err());
        assert!(normalize_ext(&"x".repeat(17)).is_err());
    }

    #[test]
    fn content_types_follow_the_extension() {
        let m = ContentMeta {
            ext: "mp4".into(),
            size: 1,
        };
        assert_eq!(m.content_type(), "video/mp4");
        assert_eq!(content_type("weird"), "application/octet-stream");
        // Every extension named, with its type: browsers and players rely
        // on it, and no arm may fall through to octet-stream.
        let table = [
            ("txt", "text/plain; charset=utf-8"),
            ("html", "text/html; charset=utf-8"),
            ("htm", "text/html; charset=utf-8"),
            ("css", "text/css"),
            ("js", "text/javascript"),
            ("json", "application/json"),
            ("xml", "application/xml"),
            ("csv", "text/csv"),
            ("pdf", "application/pdf"),
            ("zip", "application/zip"),
            ("gz", "application/gzip"),
            ("tar", "application/x-tar"),
            ("jpg", "image/jpeg"),
            ("jpeg", "image/jpeg"),
            ("png", "image/png"),
            ("gif", "image/gif"),
            ("webp", "image/webp"),
            ("svg", "image/svg+xml"),
            ("ico", "image/x-icon"),
            ("mp3", "audio/mpeg"),
            ("ogg", "audio/ogg"),
            ("wav", "audio/wav"),
            ("flac", "audio/flac"),
            ("mp4", "video/mp4"),
            ("m4v", "video/mp4"),
            ("webm", "video/webm"),
            ("mkv", "video/x-matroska"),
            ("mov", "video/quicktime"),
            ("avi", "video/x-msvideo"),
            ("m3u8", "application/vnd.apple.mpegurl"),
            ("ts", "video/mp2t"),
            ("wasm", "application/wasm"),
        ];
        for (ext, ty) in table {
            assert_eq!(content_type(ext), ty, "{ext}");
        }
    }
}
