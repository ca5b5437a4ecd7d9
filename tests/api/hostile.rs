//! Hostile input: generated requests of every unary RPC (huge and control-
//! character strings, amounts like "1e400" / "NaN" / "-0", extreme
//! quantities, 500+ lines, unknown enum numbers, empty and malformed ids)
//! must each get OK or a clear client error with its ErrorInfo: no panic,
//! no INTERNAL. Calls go straight to the service implementation (in
//! process) so that 100,000 of them take seconds on the memory store; a
//! smaller run goes through Postgres too.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use crate::helpers::{Backend, fresh_database};
use cart_service::{
    domain::{Authentication, Caller, Currency, Policy, Scopes, TenantId},
    grpc::service::CartApi,
    ports::Store,
    proto::{self, cart_service_server::CartService},
    store::{
        memory::MemoryStore,
        postgres::{PgOptions, PgStore},
    },
    usecase::Carts,
};
use proptest::{prelude::*, test_runner::TestRunner};
use tonic::{Code, Request};
use tonic_types::StatusExt;

/// Generated requests per run: `var` if set, else `default`.
fn cases(var: &str, default: u32) -> u32 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn nasty_string() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[a-zA-Z0-9_-]{0,12}",
        2 => any::<String>(),
        1 => Just(String::new()),
        1 => Just("'; DROP TABLE carts; --".to_string()),
        1 => Just("a\u{0}b\u{7}\r\n\t".to_string()),
        1 => Just(" padded ".to_string()),
        1 => (0usize..20_000).prop_map(|n| "é".repeat(n)),
        1 => (0usize..300).prop_map(|n| "x".repeat(n)),
        1 => Just("\u{202e}\u{feff}🛒".to_string()),
    ]
    .boxed()
}

fn amount() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[0-9]{1,14}(\\.[0-9]{0,4})?",
        1 => prop::sample::select(vec![
            "", "1e400", "NaN", "-0", "-1", "+1", "inf", "0x10", "1,5", ".5", "5.", "0.001",
            "1000000000000", "1000000000000.01", "99999999999999999999999999999999999", "  1",
        ])
        .prop_map(str::to_string),
        1 => nasty_string(),
    ]
    .boxed()
}

fn quantity() -> BoxedStrategy<i32> {
    prop_oneof![
        3 => 0i32..5,
        1 => any::<i32>(),
        1 => prop::sample::select(vec![i32::MIN, -1, 99_999, 100_000, 100_001, i32::MAX]),
    ]
    .boxed()
}

fn enum_number() -> BoxedStrategy<i32> {
    prop_oneof![3 => 0i32..8, 1 => any::<i32>()].boxed()
}

fn map() -> BoxedStrategy<std::collections::BTreeMap<String, String>> {
    prop_oneof![
        3 => Just(Default::default()),
        2 => prop::collection::btree_map(nasty_string(), nasty_string(), 0..4),
        1 => (60usize..80).prop_map(|n| (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect()),
    ]
    .boxed()
}

fn item() -> BoxedStrategy<proto::ItemInput> {
    (
        nasty_string(),
        nasty_string(),
        quantity(),
        amount(),
        prop_oneof![Just(String::new()), amount()],
        map(),
    )
        .prop_map(
            |(sku, name, quantity, unit_price, list_price, attributes)| proto::ItemInput {
                sku,
                name,
                quantity,
                unit_price,
                list_price,
                attributes,
            },
        )
        .boxed()
}

fn items() -> BoxedStrategy<Vec<proto::ItemInput>> {
    prop_oneof![
        8 => prop::collection::vec(item(), 0..6),
        1 => (495usize..510).prop_map(|n| {
            (0..n)
                .map(|i| proto::ItemInput {
                    sku: format!("S{i}"),
                    quantity: 1,
                    unit_price: "1".into(),
                    ..Default::default()
                })
                .collect()
        }),
    ]
    .boxed()
}

/// An id: one of the seeded carts, a fresh UUID, or garbage.
fn cart_id(known: Vec<String>) -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::sample::select(known),
        1 => Just(uuid::Uuid::new_v4().to_string()),
        1 => Just(String::new()),
        1 => nasty_string(),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
enum Call {
    Create(proto::CreateCartRequest),
    Get(proto::GetCartRequest),
    List(proto::ListCartsRequest),
    Add(proto::AddItemsRequest),
    Set(proto::SetItemsRequest),
    Remove(proto::RemoveItemsRequest),
    Clear(proto::ClearCartRequest),
    Update(proto::UpdateCartRequest),
    Merge(proto::MergeCartsRequest),
    Submit(proto::SubmitCartRequest),
    Confirm(proto::ConfirmCartRequest),
    Cancel(proto::CancelCartRequest),
}

fn call(known: Vec<String>) -> BoxedStrategy<Call> {
    let id = move || cart_id(known.clone());
    let version = || prop_oneof![3 => Just(0i64), 1 => any::<i64>(), 1 => 1i64..4].boxed();
    let key = || prop_oneof![3 => Just(String::new()), 1 => "k[0-9]", 1 => nasty_string()].boxed();
    prop_oneof![
        (
            (
                nasty_string(),
                nasty_string(),
                prop_oneof![
                    Just("USD".to_string()),
                    Just("ISK".to_string()),
                    nasty_string()
                ]
            ),
            (nasty_string(), nasty_string(), nasty_string(), map()),
            (
                enum_number(),
                nasty_string(),
                nasty_string(),
                items(),
                key()
            ),
        )
            .prop_map(
                |(
                    (customer_id, reference, currency),
                    (country, channel, description, metadata),
                    (ct, cb, cbc, items, request_id),
                )| {
                    Call::Create(proto::CreateCartRequest {
                        customer_id,
                        reference,
                        currency,
                        country,
                        channel,
                        description,
                        metadata,
                        confirmation_type: ct,
                        callback_url: cb,
                        callback_cancel_url: cbc,
                        items,
                        request_id,
                    })
                }
            ),
        id().prop_map(|cart_id| Call::Get(proto::GetCartRequest { cart_id })),
        (
            nasty_string(),
            prop::collection::vec(enum_number(), 0..3),
            any::<i32>(),
            nasty_string()
        )
            .prop_map(|(customer_id, statuses, page_size, page_token)| Call::List(
                proto::ListCartsRequest {
                    customer_id,
                    statuses,
                    page_size,
                    page_token,
                }
            )),
        (id(), items(), version(), key()).prop_map(
            |(cart_id, items, expected_version, request_id)| Call::Add(proto::AddItemsRequest {
                cart_id,
                items,
                expected_version,
                request_id,
            })
        ),
        (id(), items(), version(), key()).prop_map(
            |(cart_id, items, expected_version, request_id)| Call::Set(proto::SetItemsRequest {
                cart_id,
                items,
                expected_version,
                request_id,
            })
        ),
        (
            id(),
            prop::collection::vec(nasty_string(), 0..3),
            version(),
            key()
        )
            .prop_map(
                |(cart_id, skus, expected_version, request_id)| Call::Remove(
                    proto::RemoveItemsRequest {
                        cart_id,
                        skus,
                        expected_version,
                        request_id,
                    }
                )
            ),
        (id(), version(), key()).prop_map(|(cart_id, expected_version, request_id)| Call::Clear(
            proto::ClearCartRequest {
                cart_id,
                expected_version,
                request_id,
            }
        )),
        (
            id(),
            prop::option::of(nasty_string()),
            prop::option::of(nasty_string()),
            prop::option::of(nasty_string()),
            map(),
            any::<bool>(),
            version()
        )
            .prop_map(
                |(
                    cart_id,
                    customer_id,
                    country,
                    callback_url,
                    metadata,
                    clear_metadata,
                    expected_version,
                )| {
                    Call::Update(proto::UpdateCartRequest {
                        cart_id,
                        customer_id,
                        country,
                        callback_url,
                        metadata,
                        clear_metadata,
                        expected_version,
                        ..Default::default()
                    })
                }
            ),
        (id(), id(), nasty_string(), enum_number(), key(), version()).prop_map(
            |(
                source_cart_id,
                target_cart_id,
                customer_id,
                strategy,
                request_id,
                expected_version,
            )| {
                Call::Merge(proto::MergeCartsRequest {
                    source_cart_id,
                    target_cart_id,
                    customer_id,
                    strategy,
                    request_id,
                    expected_version,
                })
            }
        ),
        (id(), version(), amount(), key()).prop_map(
            |(cart_id, expected_version, expected_total, request_id)| {
                Call::Submit(proto::SubmitCartRequest {
                    cart_id,
                    expected_version,
                    expected_total,
                    request_id,
                })
            }
        ),
        (id(), enum_number(), key(), version()).prop_map(
            |(cart_id, actor, request_id, expected_version)| {
                Call::Confirm(proto::ConfirmCartRequest {
                    cart_id,
                    actor,
                    request_id,
                    expected_version,
                })
            }
        ),
        (id(), enum_number(), nasty_string(), key(), version()).prop_map(
            |(cart_id, actor, reason, request_id, expected_version)| {
                Call::Cancel(proto::CancelCartRequest {
                    cart_id,
                    actor,
                    reason,
                    request_id,
                    expected_version,
                })
            }
        ),
    ]
    .boxed()
}

fn request<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    let caller = Caller {
        tenant: TenantId("fuzz".into()),
        scopes: Scopes::EVERY,
    };
    r.extensions_mut().insert(Authentication(Ok(caller)));
    r
}

/// The code of a call, or its error when the error is not a clear client error.
async fn run(api: &CartApi, c: Call) -> Result<Code, String> {
    macro_rules! go {
        ($m:ident, $r:expr) => {
            api.$m(request($r)).await.map(|_| ())
        };
    }
    let r = match c {
        Call::Create(r) => go!(create_cart, r),
        Call::Get(r) => go!(get_cart, r),
        Call::List(r) => go!(list_carts, r),
        Call::Add(r) => go!(add_items, r),
        Call::Set(r) => go!(set_items, r),
        Call::Remove(r) => go!(remove_items, r),
        Call::Clear(r) => go!(clear_cart, r),
        Call::Update(r) => go!(update_cart, r),
        Call::Merge(r) => go!(merge_carts, r),
        Call::Submit(r) => go!(submit_cart, r),
        Call::Confirm(r) => go!(confirm_cart, r),
        Call::Cancel(r) => go!(cancel_cart, r),
    };
    let Err(status) = r else { return Ok(Code::Ok) };
    let allowed = [
        Code::InvalidArgument,
        Code::NotFound,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::AlreadyExists,
    ];
    if !allowed.contains(&status.code()) {
        return Err(format!("unexpected code: {status:?}"));
    }
    match status.get_details_error_info() {
        Some(info) if info.domain == "cart.v1" && !info.reason.is_empty() => Ok(status.code()),
        _ => Err(format!("no ErrorInfo: {status:?}")),
    }
}

/// Memory: CART_FUZZ_CASES requests (100,000 by default).
#[test]
fn generated_requests_get_ok_or_a_clear_client_error_in_memory() {
    let n = cases("CART_FUZZ_CASES", 100_000);
    generated_requests_get_ok_or_a_clear_client_error(Backend::Memory, n);
}

/// Postgres: every call reaches the database, so fewer by default
/// (CART_FUZZ_PG_CASES, 10,000) to keep the whole suite in minutes.
#[test]
fn generated_requests_get_ok_or_a_clear_client_error_on_postgres() {
    let n = cases("CART_FUZZ_PG_CASES", 10_000);
    generated_requests_get_ok_or_a_clear_client_error(Backend::Postgres, n);
}

fn generated_requests_get_ok_or_a_clear_client_error(backend: Backend, cases: u32) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store: Arc<dyn Store> = match backend {
        Backend::Memory => Arc::new(MemoryStore::new()),
        Backend::Postgres => rt.block_on(async {
            let opts = PgOptions {
                url: fresh_database().await,
                pool_size: 4,
                timeout: std::time::Duration::from_secs(10),
                cache_bytes: 1 << 20,
            };
            Arc::new(PgStore::connect(&opts).await.expect("Postgres store"))
        }),
    };
    let api = CartApi::new(
        Carts::new(store.clone(), Policy::default()),
        store,
        Currency::parse("USD").unwrap(),
    );
    let known: Vec<String> = rt.block_on(async {
        let mut ids = Vec::new();
        for i in 0..8 {
            let items = vec![proto::ItemInput {
                sku: format!("S{i}"),
                quantity: 1,
                unit_price: "1.00".into(),
                ..Default::default()
            }];
            let cart = api
                .create_cart(request(proto::CreateCartRequest {
                    items,
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            ids.push(cart.id);
        }
        ids
    });
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    };
    let ok = AtomicUsize::new(0);
    let sent = AtomicUsize::new(0);
    let mut runner = TestRunner::new(config);
    let result = runner.run(&call(known), |c| {
        sent.fetch_add(1, Ordering::Relaxed);
        match rt.block_on(run(&api, c)) {
            Ok(Code::Ok) => {
                ok.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(TestCaseError::fail(e)),
        }
    });
    let (sent, ok) = (sent.into_inner(), ok.into_inner());
    eprintln!(
        "hostile input ({backend:?}): {sent} requests, {ok} OK, the rest clear client errors"
    );
    result.unwrap();
    assert!(sent >= cases as usize);
    assert!(ok > 0 && ok < sent, "the generator reaches both outcomes");
}
