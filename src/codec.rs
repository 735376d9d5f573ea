//! Decompression of the observer's copy of a response body (`Content-Encoding`).
//!
//! Owns: push-style decoders that take compressed chunks as they arrive and hand out what they
//! decode, capped so a decompression bomb costs at most the cap. Does not: touch the forwarded
//! bytes; the client always receives the body exactly as the upstream encoded it.

use std::io::{self, Write};

use brotli_decompressor::DecompressorWriter;
use flate2::write::{GzDecoder, ZlibDecoder};
use ruzstd::decoding::FrameDecoder;

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

enum Inner {
    Gzip(GzDecoder<Sink>),
    Deflate(ZlibDecoder<Sink>),
    Brotli(Box<DecompressorWriter<Sink>>),
    Zstd(Box<Zstd>),
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Inner::Gzip(_) => "gzip",
            Inner::Deflate(_) => "deflate",
            Inner::Brotli(_) => "br",
            Inner::Zstd(_) => "zstd",
        })
    }
}

/// ruzstd decodes whole blocks from a slice; this keeps an incomplete block (at most 128 KiB)
/// until the rest of it arrives, and starts a new frame when one ends and more bytes follow.
struct Zstd {
    decoder: FrameDecoder,
    pending: Vec<u8>,
    scratch: Vec<u8>,
    sink: Sink,
    frame_started: bool,
}

/// A zstd frame header is at most 18 bytes: wait for that much before starting a frame.
const ZSTD_MAX_HEADER: usize = 18;

impl Zstd {
    fn new(sink: Sink) -> Zstd {
        Zstd {
            decoder: FrameDecoder::new(),
            pending: Vec::new(),
            scratch: vec![0; 64 << 10],
            sink,
            frame_started: false,
        }
    }

    fn run(&mut self, at_end: bool) -> io::Result<()> {
        loop {
            if !self.frame_started {
                if self.pending.is_empty() || (self.pending.len() < ZSTD_MAX_HEADER && !at_end) {
                    return Ok(());
                }
                self.decoder = FrameDecoder::new();
                self.frame_started = true;
            }
            // Waiting for a frame's 4-byte checksum, ruzstd reports 4 bytes read even when
            // given fewer: give it at least 4 until the body ends, and never trust `read` past
            // what it was given.
            if self.pending.len() < 4 && !at_end {
                return Ok(());
            }
            let (read, written) = self
                .decoder
                .decode_from_to(&self.pending, &mut self.scratch)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let written = written.min(self.scratch.len());
            self.sink.write_all(&self.scratch[..written])?;
            let consumed = read.min(self.pending.len());
            self.pending.drain(..consumed);
            if self.decoder.is_finished() && self.decoder.can_collect() == 0 {
                self.frame_started = false;
                continue;
            }
            if consumed == 0 && written == 0 {
                return Ok(());
            }
        }
    }

    fn finished(&self) -> bool {
        !self.frame_started && self.pending.is_empty()
    }
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
            "br" => Inner::Brotli(Box::new(DecompressorWriter::new(sink, 4096))),
            "zstd" => Inner::Zstd(Box::new(Zstd::new(sink))),
            _ => return Err(CodecError::Unsupported(name)),
        };
        Ok(Some(Decoder { inner, limit }))
    }

    /// Decodes the next compressed bytes, handing what they decode to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut impl FnMut(&[u8])) -> Result<(), CodecError> {
        let result = match &mut self.inner {
            Inner::Gzip(d) => d.write_all(input),
            Inner::Deflate(d) => d.write_all(input),
            Inner::Brotli(d) => d.write_all(input),
            Inner::Zstd(z) => {
                z.pending.extend_from_slice(input);
                z.run(false)
            }
        };
        self.drain(out);
        result.map_err(|e| self.error(&e))
    }

    /// Ends the body, handing out anything still buffered.
    pub fn finish(&mut self, out: &mut impl FnMut(&[u8])) -> Result<(), CodecError> {
        let result = match &mut self.inner {
            Inner::Gzip(d) => d.try_finish(),
            Inner::Deflate(d) => d.try_finish(),
            Inner::Brotli(d) => d.close(),
            Inner::Zstd(z) => z.run(true).and_then(|()| {
                if z.finished() {
                    Ok(())
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                }
            }),
        };
        self.drain(out);
        // Corruption shows while pushing; failing only at the end means the body stopped short.
        result.map_err(|e| match self.error(&e) {
            CodecError::Corrupt => CodecError::Truncated,
            other => other,
        })
    }

    fn sink(&mut self) -> &mut Sink {
        match &mut self.inner {
            Inner::Gzip(d) => d.get_mut(),
            Inner::Deflate(d) => d.get_mut(),
            Inner::Brotli(d) => d.get_mut(),
            Inner::Zstd(z) => &mut z.sink,
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
    fn brotli_from_the_reference_encoder() {
        let plain = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/chat_stream_usage.sse"
        ))
        .unwrap();
        let br = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/chat_stream_usage.sse.br"
        ))
        .unwrap();
        let chunks: Vec<&[u8]> = br.chunks(7).collect();
        assert_eq!(decode_in("br", &chunks, 1 << 20).unwrap(), plain);
        assert_eq!(
            decode_in("br", &[&br[..br.len() - 5]], 1 << 20).unwrap_err(),
            CodecError::Truncated
        );
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    #[test]
    fn zstd_in_pieces_several_frames_and_truncation() {
        let text = b"data: {\"choices\":[]}\n\n".repeat(20_000);
        let z = zstd(&text);
        let chunks: Vec<&[u8]> = z.chunks(1000).collect();
        assert_eq!(decode_in("zstd", &chunks, 1 << 22).unwrap(), text);
        let mut two = zstd(b"first ");
        two.extend(zstd(b"second"));
        assert_eq!(
            decode_in("zstd", &[&two], 1 << 20).unwrap(),
            b"first second"
        );
        assert_eq!(
            decode_in("zstd", &[&z[..z.len() / 2]], 1 << 22).unwrap_err(),
            CodecError::Truncated
        );
        // Cut inside the trailing checksum, fed in pieces: ends as truncated, and ends.
        for cut in 1..4 {
            let short = &z[..z.len() - cut];
            let pieces: Vec<&[u8]> = short.chunks(3).collect();
            assert_eq!(
                decode_in("zstd", &pieces, 1 << 22).unwrap_err(),
                CodecError::Truncated,
                "cut {cut}"
            );
        }
        assert_eq!(
            decode_in("zstd", &[&z], 1 << 10).unwrap_err(),
            CodecError::TooLarge(1 << 10)
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
        fn output_does_not_depend_on_chunking(cut in any::<prop::sample::Index>(), which in 0usize..2) {
            let text = b"event: x\ndata: hello\n\n".repeat(40);
            let (encoding, z) = if which == 0 { ("gzip", gzip(&text)) } else { ("zstd", zstd(&text)) };
            let cut = cut.index(z.len() + 1);
            prop_assert_eq!(decode_in(encoding, &[&z[..cut], &z[cut..]], 1 << 20).unwrap(), text);
        }
    }
}
