//! Decompression of the observer's copy of a response body (`Content-Encoding`).
//!
//! Owns: push-style decoders that take compressed chunks as they arrive and hand out what they
//! decode, capped so a decompression bomb costs at most the cap. Does not: touch the forwarded
//! bytes; the client always receives the body exactly as the upstream encoded it.

use std::io::{self, Write};

use flate2::write::{GzDecoder, ZlibDecoder};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("content encoding {0:?} is not supported for observation")]
    Unsupported(String),
    #[error("decoded body exceeds the observation limit of {0} bytes")]
    TooLarge(usize),
    #[error("compressed body is corrupt")]
    Corrupt,
    #[error("compressed body is truncated")]
    Truncated,
}

/// Collects decoded output up to a limit.
#[derive(Debug)]
struct Sink {
    out: Vec<u8>,
    total: usize,
    limit: usize,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.total += buf.len();
        if self.total > self.limit {
            return Err(io::Error::other("limit"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
enum Inner {
    Gzip(GzDecoder<Sink>),
    Deflate(ZlibDecoder<Sink>),
}

/// A streaming decoder for one `Content-Encoding`.
#[derive(Debug)]
pub struct Decoder {
    inner: Inner,
    limit: usize,
}

impl Decoder {
    /// The decoder for a `Content-Encoding` value; `None` for identity (nothing to decode).
    pub fn for_encoding(value: &[u8], limit: usize) -> Result<Option<Decoder>, CodecError> {
        let name = String::from_utf8_lossy(value).trim().to_ascii_lowercase();
        let sink = Sink {
            out: Vec::new(),
            total: 0,
            limit,
        };
        let inner = match name.as_str() {
            "" | "identity" => return Ok(None),
            "gzip" | "x-gzip" => Inner::Gzip(GzDecoder::new(sink)),
            "deflate" => Inner::Deflate(ZlibDecoder::new(sink)),
            _ => return Err(CodecError::Unsupported(name)),
        };
        Ok(Some(Decoder { inner, limit }))
    }

    /// Decodes the next compressed bytes, handing what they decode to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut impl FnMut(&[u8])) -> Result<(), CodecError> {
        let result = match &mut self.inner {
            Inner::Gzip(d) => d.write_all(input),
            Inner::Deflate(d) => d.write_all(input),
        };
        self.drain(out);
        result.map_err(|e| self.error(&e))
    }

    /// Ends the body, handing out anything still buffered.
    pub fn finish(&mut self, out: &mut impl FnMut(&[u8])) -> Result<(), CodecError> {
        let result = match &mut self.inner {
            Inner::Gzip(d) => d.try_finish(),
            Inner::Deflate(d) => d.try_finish(),
        };
        self.drain(out);
        result.map_err(|e| match self.error(&e) {
            CodecError::Corrupt if e.kind() == io::ErrorKind::UnexpectedEof => {
                CodecError::Truncated
            }
            other => other,
        })
    }

    fn sink(&mut self) -> &mut Sink {
        match &mut self.inner {
            Inner::Gzip(d) => d.get_mut(),
            Inner::Deflate(d) => d.get_mut(),
        }
    }

    fn drain(&mut self, out: &mut impl FnMut(&[u8])) {
        let sink = self.sink();
        if !sink.out.is_empty() {
            out(&sink.out);
            sink.out.clear();
        }
    }

    fn error(&mut self, _e: &io::Error) -> CodecError {
        let limit = self.limit;
        if self.sink().total > limit {
            CodecError::TooLarge(limit)
        } else {
            CodecError::Corrupt
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::{GzEncoder, ZlibEncoder};
    use proptest::prelude::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode_in(encoding: &str, chunks: &[&[u8]], limit: usize) -> Result<Vec<u8>, CodecError> {
        let mut d = Decoder::for_encoding(encoding.as_bytes(), limit)?.expect("a decoder");
        let mut out = Vec::new();
        for c in chunks {
            d.push(c, &mut |b| out.extend_from_slice(b))?;
        }
        d.finish(&mut |b| out.extend_from_slice(b))?;
        Ok(out)
    }

    #[test]
    fn gzip_and_deflate_round_trip() {
        let text = b"data: {\"id\":\"x\"}\n\n".repeat(50);
        assert_eq!(decode_in("gzip", &[&gzip(&text)], 1 << 20).unwrap(), text);
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(&text).unwrap();
        assert_eq!(
            decode_in("Deflate", &[&z.finish().unwrap()], 1 << 20).unwrap(),
            text
        );
    }

    #[test]
    fn identity_needs_no_decoder_and_unknown_is_reported() {
        assert!(Decoder::for_encoding(b"identity", 10).unwrap().is_none());
        assert_eq!(
            Decoder::for_encoding(b"compress", 10).unwrap_err(),
            CodecError::Unsupported("compress".into())
        );
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 64 << 10);
        assert_eq!(
            decode_in("gzip", &[&bomb], 1 << 20).unwrap_err(),
            CodecError::TooLarge(1 << 20)
        );
    }

    #[test]
    fn truncated_and_corrupt_bodies_are_told_apart() {
        let z = gzip(&b"hello world ".repeat(100));
        assert_eq!(
            decode_in("gzip", &[&z[..z.len() / 2]], 1 << 20).unwrap_err(),
            CodecError::Truncated
        );
        assert_eq!(
            decode_in("gzip", &[b"not gzip at all"], 1 << 20).unwrap_err(),
            CodecError::Corrupt
        );
    }

    proptest! {
        #[test]
        fn output_does_not_depend_on_chunking(cut in any::<prop::sample::Index>()) {
            let text = b"event: x\ndata: hello\n\n".repeat(40);
            let z = gzip(&text);
            let cut = cut.index(z.len() + 1);
            prop_assert_eq!(decode_in("gzip", &[&z[..cut], &z[cut..]], 1 << 20).unwrap(), text);
        }
    }
}
