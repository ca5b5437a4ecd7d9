//! The protobuf codec of our services: prost's, except that a request that
//! does not decode (bad bytes, invalid UTF-8 in a string) is the caller's
//! bad input, INVALID_ARGUMENT with our ErrorInfo, not INTERNAL.
//!
//! Buffers start at 512 bytes instead of tonic's 8 KiB: tonic allocates one per
//! call and keeps it for as long as a stream is open, so with tonic's size
//! an idle watch stream held 8 KiB for nothing (a cart event of a small
//! cart encodes in a few hundred bytes). Larger messages grow the buffer.

use std::marker::PhantomData;

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

/// The codec of the calls served by `super::routes`: requests decode as
/// above; the answer (`T`: a cart or a ListCarts page written straight from
/// the domain values, or a watch event already encoded once per replica)
/// is written into the frame as it is, not built as a message first.
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
        // One allocation, sized by the first answer.
        dst.reserve(answer.size_bound());
        answer.encode(dst);
        Ok(())
    }

    /// No first buffer: each answer reserves what it needs, so a stream
    /// that has sent nothing (most WatchCarts streams, most of the time)
    /// holds no buffer.
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(0, YIELD_THRESHOLD)
    }
}
