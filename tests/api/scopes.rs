//! Credentials and scopes: each scope allows exactly its calls, a key
//! without scopes can do everything, keys rotate through the keys file
//! (on change and on SIGHUP) without a restart, and every call is
//! authenticated exactly once.

use std::time::{Duration, Instant};

use cart_service::proto::{
    self, Actor, AddItemsRequest, CancelCartRequest, ClearCartRequest, ConfirmCartRequest,
    ConfirmationType, CreateCartRequest, GetCartRequest, ListCartsRequest, MergeCartsRequest,
    RemoveItemsRequest, SetItemsRequest, SubmitCartRequest, UpdateCartRequest, WatchCartRequest,
    WatchCartsRequest,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::{
    both_stores,
    helpers::{
        Backend, Client, TestApp, assert_error, confirm, create_cart, item, keys, spawn_app_with,
        status,
    },
};

#[derive(Debug, Clone, Copy)]
enum Rpc {
    Get,
    List,
    Create,
    Add,
    Set,
    Remove,
    Clear,
    Update,
    Merge,
    Submit,
    CancelNoActor,
    CancelCustomer,
    CancelProvider,
    ConfirmCustomer,
    ConfirmProvider,
    WatchCart,
    WatchCarts,
}

impl Rpc {
    const ALL: [Rpc; 17] = [
        Rpc::Get,
        Rpc::List,
        Rpc::Create,
        Rpc::Add,
        Rpc::Set,
        Rpc::Remove,
        Rpc::Clear,
        Rpc::Update,
        Rpc::Merge,
        Rpc::Submit,
        Rpc::CancelNoActor,
        Rpc::CancelCustomer,
        Rpc::CancelProvider,
        Rpc::ConfirmCustomer,
        Rpc::ConfirmProvider,
        Rpc::WatchCart,
        Rpc::WatchCarts,
    ];

    /// The scope the contract's table gives the call.
    fn scope(self) -> &'static str {
        match self {
            Rpc::Get | Rpc::List => "read",
            Rpc::WatchCart | Rpc::WatchCarts => "watch",
            Rpc::CancelCustomer | Rpc::ConfirmCustomer => "customer",
            Rpc::CancelProvider | Rpc::ConfirmProvider => "provider",
            _ => "write",
        }
    }

    /// Makes the call on a cart id nobody has: an allowed call fails with
    /// NOT_FOUND (or succeeds), a refused one with PERMISSION_DENIED.
    async fn call(self, c: &mut Client) -> Result<(), Status> {
        let id = || uuid::Uuid::new_v4().to_string();
        let cancel = |actor: Actor| CancelCartRequest {
            cart_id: id(),
            actor: actor as i32,
            ..Default::default()
        };
        let confirm = |actor: Actor| ConfirmCartRequest {
            cart_id: id(),
            actor: actor as i32,
            ..Default::default()
        };
        match self {
            Rpc::Get => c.get_cart(GetCartRequest { cart_id: id() }).await.map(drop),
            Rpc::List => c.list_carts(ListCartsRequest::default()).await.map(drop),
            Rpc::Create => c
                .create_cart(CreateCartRequest {
                    currency: "USD".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::Add => c
                .add_items(AddItemsRequest {
                    cart_id: id(),
                    items: vec![item("A", 1, "1")],
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::Set => c
                .set_items(SetItemsRequest {
                    cart_id: id(),
                    items: vec![item("A", 1, "1")],
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::Remove => c
                .remove_items(RemoveItemsRequest {
                    cart_id: id(),
                    skus: vec!["A".into()],
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::Clear => c
                .clear_cart(ClearCartRequest {
                    cart_id: id(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::Update => c
                .update_cart(UpdateCartRequest {
                    cart_id: id(),
                    description: Some("x".into()),
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::Merge => c
                .merge_carts(MergeCartsRequest {
                    source_cart_id: id(),
                    target_cart_id: id(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::Submit => c
                .submit_cart(SubmitCartRequest {
                    cart_id: id(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::CancelNoActor => c.cancel_cart(cancel(Actor::Unspecified)).await.map(drop),
            Rpc::CancelCustomer => c.cancel_cart(cancel(Actor::Customer)).await.map(drop),
            Rpc::CancelProvider => c.cancel_cart(cancel(Actor::Provider)).await.map(drop),
            Rpc::ConfirmCustomer => c.confirm_cart(confirm(Actor::Customer)).await.map(drop),
            Rpc::ConfirmProvider => c.confirm_cart(confirm(Actor::Provider)).await.map(drop),
            // A stream is refused at once or answers its first event
            // (the cart's current state, here NOT_FOUND).
            Rpc::WatchCart => {
                let mut s = c
                    .watch_cart(WatchCartRequest {
                        cart_id: id(),
                        after_version: 0,
                    })
                    .await?
                    .into_inner();
                s.message().await.map(drop)
            }
            Rpc::WatchCarts => c.watch_carts(WatchCartsRequest::default()).await.map(drop),
        }
    }
}

const SCOPES: [&str; 5] = ["read", "write", "watch", "customer", "provider"];

async fn each_scope_allows_exactly_its_calls(b: Backend) {
    let app = spawn_app_with(b, |c| {
        c.api_keys = keys(&[
            ("shop", "k-read:read"),
            ("shop", "k-write:write"),
            ("shop", "k-watch:watch"),
            ("shop", "k-customer:customer"),
            ("shop", "k-provider:provider"),
            ("shop", "k-two:read+provider"),
            ("shop", "k-all"),
        ])
    })
    .await;
    for rpc in Rpc::ALL {
        for (key, held) in SCOPES.iter().map(|s| (format!("k-{s}"), vec![*s])).chain([
            ("k-two".to_string(), vec!["read", "provider"]),
            ("k-all".to_string(), SCOPES.to_vec()),
        ]) {
            let mut c = app.client_with_key(Some(&key));
            let r = rpc.call(&mut c).await;
            if held.contains(&rpc.scope()) {
                if let Err(s) = &r {
                    assert!(
                        matches!(s.code(), Code::NotFound),
                        "{rpc:?} with {key}: {s:?}"
                    );
                }
            } else {
                let s = assert_error(r, Code::PermissionDenied, "MISSING_SCOPE");
                let info = s.get_details_error_info().unwrap();
                assert_eq!(
                    info.metadata.get("scope").map(String::as_str),
                    Some(rpc.scope()),
                    "{rpc:?} with {key}"
                );
            }
        }
    }
    // Refused creates did nothing: only the keys holding `write` made carts.
    let mut reader = app.client_with_key(Some("k-read"));
    let list = reader
        .list_carts(ListCartsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.carts.len(), 2, "one create by k-write, one by k-all");
}

/// The worked example of the README: the merchant's backend builds and
/// submits, the customer's payment app confirms as the customer, the
/// payment provider confirms as the provider; neither can act as the other.
async fn customer_and_provider_keys_confirm_only_as_themselves(b: Backend) {
    let app = spawn_app_with(b, |c| {
        c.api_keys = keys(&[
            ("shop", "backend-key:read+write+watch"),
            ("shop", "wallet-key:customer"),
            ("shop", "psp-key:provider"),
        ])
    })
    .await;
    let mut backend = app.client_with_key(Some("backend-key"));
    let mut wallet = app.client_with_key(Some("wallet-key"));
    let mut psp = app.client_with_key(Some("psp-key"));
    let cart = backend
        .create_cart(CreateCartRequest {
            currency: "USD".into(),
            confirmation_type: ConfirmationType::Manual as i32,
            items: vec![item("TEA", 1, "4.50")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    crate::helpers::submit(&mut backend, &cart.id).await;
    for (c, actor) in [
        (&mut backend, Actor::Customer),
        (&mut wallet, Actor::Provider),
        (&mut psp, Actor::Customer),
    ] {
        assert_error(
            confirm(c, &cart.id, actor).await,
            Code::PermissionDenied,
            "MISSING_SCOPE",
        );
    }
    let waiting = confirm(&mut wallet, &cart.id, Actor::Customer)
        .await
        .unwrap();
    assert_eq!(status(&waiting), proto::CartStatus::AwaitingProvider);
    let done = confirm(&mut psp, &cart.id, Actor::Provider).await.unwrap();
    assert_eq!(status(&done), proto::CartStatus::Confirmed);
    // The wallet cannot read the cart it confirmed.
    assert_error(
        wallet
            .get_cart(GetCartRequest {
                cart_id: cart.id.clone(),
            })
            .await,
        Code::PermissionDenied,
        "MISSING_SCOPE",
    );
}

async fn every_call_is_authenticated_once(b: Backend) {
    let app = spawn_app_with(b, |c| c.api_keys = keys(&[("shop", "k1")])).await;
    let mut c = app.client_with_key(Some("k1"));
    let cart = create_cart(&mut c, vec![]).await;
    crate::helpers::get(&mut c, &cart.id).await;
    let mut stranger = app.client_with_key(Some("nope"));
    assert_error(
        stranger.list_carts(ListCartsRequest::default()).await,
        Code::Unauthenticated,
        "UNAUTHENTICATED",
    );
    let text = app.metrics.render(None, 0);
    let line = |outcome: &str| format!(r#"cart_authentications_total{{outcome="{outcome}"}}"#);
    assert_eq!(metric(&text, &line("ok")), Some(2), "{text}");
    assert_eq!(metric(&text, &line("failed")), Some(1), "{text}");
}

both_stores!(
    each_scope_allows_exactly_its_calls,
    customer_and_provider_keys_confirm_only_as_themselves,
    every_call_is_authenticated_once,
);

/// The value of one series in the metrics text.
pub fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Replaces the keys file the way an operator should: write, then rename.
fn write_keys(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn works(app: &TestApp, key: &str) -> bool {
    let mut c = app.client_with_key(Some(key));
    c.list_carts(ListCartsRequest::default()).await.is_ok()
}

/// Waits (20 s at most) until `key` is accepted (`want`) or refused.
async fn wait_until_key(app: &TestApp, key: &str, want: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while works(app, key).await != want {
        assert!(Instant::now() < deadline, "key {key} never became {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the keys file was rejected `n` times in all.
async fn wait_for_rejections(app: &TestApp, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let series = r#"cart_api_key_reloads_total{outcome="failed"}"#;
    while metric(&app.metrics.render(None, 0), series).unwrap_or(0) < n {
        assert!(
            Instant::now() < deadline,
            "the bad file was never looked at"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn temp_keys_file(text: &str) -> (tempdir::Dir, std::path::PathBuf) {
    let dir = tempdir::Dir::new();
    let path = dir.0.join("keys");
    write_keys(&path, text);
    (dir, path)
}

mod tempdir {
    /// A directory removed when dropped.
    pub struct Dir(pub std::path::PathBuf);

    impl Dir {
        pub fn new() -> Dir {
            let p = std::env::temp_dir().join(format!("cart-keys-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_through_the_file_without_a_restart() {
    let (_dir, path) = temp_keys_file("# the shop\nshop:k1\n");
    let app = spawn_app_with(Backend::Memory, |c| {
        c.api_keys_file = Some(path.clone());
        c.api_keys_poll = Duration::from_millis(100);
    })
    .await;
    assert!(works(&app, "k1").await);
    assert!(!works(&app, "k2").await);
    // Add a key: both work.
    write_keys(&path, "shop:k1\nshop:k2:read\n");
    wait_until_key(&app, "k2", true).await;
    assert!(works(&app, "k1").await);
    // Remove the old key.
    write_keys(&path, "shop:k2:read\n");
    wait_until_key(&app, "k1", false).await;
    // A malformed file (a key k3 and a bad line) keeps the previous keys.
    write_keys(&path, "shop:k3\nshop:k4:admin\n");
    wait_for_rejections(&app, 1).await;
    assert!(works(&app, "k2").await);
    assert!(!works(&app, "k3").await);
    // A missing file too.
    std::fs::remove_file(&path).unwrap();
    wait_for_rejections(&app, 2).await;
    assert!(works(&app, "k2").await);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_keys_file() {
    let (_dir, path) = temp_keys_file("shop:k1\n");
    let app = spawn_app_with(Backend::Memory, |c| {
        c.api_keys_file = Some(path.clone());
        // Never polled within the test: only the signal can reload.
        c.api_keys_poll = Duration::from_secs(3600);
    })
    .await;
    write_keys(&path, "shop:k2\n");
    assert!(works(&app, "k1").await, "no reload before the signal");
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());
    wait_until_key(&app, "k2", true).await;
    assert!(!works(&app, "k1").await);
}
