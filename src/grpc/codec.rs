//! The protobuf codec of our services: prost's, except that a request that
//! does not decode (bad bytes, invalid UTF-8 in a string) is the caller's
//! bad input, INVALID_ARGUMENT with our ErrorInfo, not INTERNAL.

use tonic::{
    Code, Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use super::status::to_status;
use crate::domain::{CartError, Reason};

#[derive(Debug)]
pub struct CartCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for CartCodec<T, U> {
    fn default() -> Self {
        CartCodec(ProstCodec::default())
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
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CartDecoder(self.0.decoder())
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
