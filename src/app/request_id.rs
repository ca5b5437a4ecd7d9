//! Request ids for calls that come without one: UUID v4 from the thread's
//! random generator. tower-http's `MakeRequestUuid` (`Uuid::new_v4`) asks
//! the kernel for every id: one `getrandom` system call per call served
//! (strace of a GetCart run: 13,545 for ~11,000 calls).

use tonic::codegen::http::{HeaderValue, Request};
use tower_http::request_id::{MakeRequestId, RequestId};
use uuid::Builder;

#[derive(Clone, Copy, Default)]
pub struct MakeRequestUuid;

impl MakeRequestId for MakeRequestUuid {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let id = Builder::from_random_bytes(rand::random()).into_uuid();
        let text = id
            .hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer())
            .to_owned();
        HeaderValue::from_str(&text).ok().map(RequestId::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_version_4_uuids() {
        let req = Request::new(());
        let mut make = MakeRequestUuid;
        let ids: Vec<uuid::Uuid> = (0..100)
            .map(|_| {
                let id = make.make_request_id(&req).expect("an id");
                id.header_value().to_str().unwrap().parse().unwrap()
            })
            .collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 4));
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }
}
