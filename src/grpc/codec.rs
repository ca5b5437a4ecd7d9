//! The protobuf codec of our services: prost's, except that a request that
//! does not decode (bad bytes, invalid UTF-8 in a string) is the caller's
//! bad input, INVALID_ARGUMENT with our ErrorInfo, not INTERNAL.
//!
//! Buffers start at 512 bytes instead of tonic's 8 KiB: tonic allocates one per
//! call and keeps it for as long as a stream is open, so with tonic's size
//! an idle watch stream held 8 KiB for nothing (a cart event of a small
//! cart encodes in a few hundred bytes). Larger messages grow the buffer.

use std::marker::PhantomData;

use bytes::{BufMut as _, Bytes};
use tonic::{
    Code, Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};
use tonic_prost::{ProstDecoder, ProstEncoder};

use super::{status::to_status, wire::Answer};
use crate::domain::{CartError, Reason};

/// tonic's: encoded messages are handed on once this many bytes wait.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// The first buffer of a call (see the module notes).
fn buffers() -> BufferSettings {
    BufferSettings::new(512, YIELD_THRESHOLD)
}

#[derive(Debug)]
pub struct CartCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for CartCodec<T, U> {
    fn default() -> Self {
        CartCodec(PhantomData)
    }
}

impl<T, U> Codec for CartCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CartDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(buffers())
    }

    fn decoder(&mut self) -> Self::Decoder {
        CartDecoder(ProstDecoder::new(buffers()))
    }
}

pub struct CartDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for CartDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|s| match s.code() {
            Code::Internal => to_status(CartError::invalid(
                "request",
                Reason::InvalidField,
                format!("is not a valid message: {}", s.message()),
            )),
            _ => s,
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// The codec of the watch calls served by `super::routes`: requests
/// decode as above; responses are messages already encoded (once per
/// replica, however many streams send them), copied into the frame as they are.
#[derive(Debug)]
pub struct EncodedCodec<U>(PhantomData<U>);

impl<U> Default for EncodedCodec<U> {
    fn default() -> Self {
        EncodedCodec(PhantomData)
    }
}

impl<U> Codec for EncodedCodec<U>
where
    U: prost::Message + Default + Send + 'static,
{
    type Encode = Bytes;
    type Decode = U;
    type Encoder = EncodedEncoder;
    type Decoder = CartDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        CartDecoder(ProstDecoder::new(buffers()))
    }
}

pub struct EncodedEncoder;

impl Encoder for EncodedEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }

    /// No first buffer: an encoded event is copied in whole, so the buffer
    /// is sized by the first event a stream sends, and a stream that has
    /// sent none (most WatchCarts streams, most of the time) holds none.
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(0, YIELD_THRESHOLD)
    }
}

/// The codec of the calls that answer carts, served by `super::routes`:
/// requests decode as above; the answer (`T`: a cart, or a ListCarts page)
/// is written straight from the domain carts (`super::wire`), not built as
/// a message first.
#[derive(Debug)]
pub struct AnswerCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for AnswerCodec<T, U> {
    fn default() -> Self {
        AnswerCodec(PhantomData)
    }
}

impl<T, U> Codec for AnswerCodec<T, U>
where
    T: Answer,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = AnswerEncoder<T>;
    type Decoder = CartDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        AnswerEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        CartDecoder(ProstDecoder::new(buffers()))
    }
}

pub struct AnswerEncoder<T>(PhantomData<T>);

impl<T: Answer> Encoder for AnswerEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, answer: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // One allocation instead of the buffer doubling up from 512 bytes.
        dst.reserve(answer.size_bound());
        answer.encode(dst);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffers()
    }
}
