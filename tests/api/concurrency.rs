//! Concurrent writers on one cart never lose an update.

use cart_service::proto::{AddItemsRequest, MergeCartsRequest};

use crate::{
    both_stores,
    helpers::{Backend, create_cart, get, item, spawn_app},
};

async fn fifty_parallel_adds_make_fifty(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let cart = create_cart(&mut c, vec![]).await;
    let calls = (0..50).map(|_| {
        let mut c = c.clone();
        let id = cart.id.clone();
        tokio::spawn(async move {
            c.add_items(AddItemsRequest {
                cart_id: id,
                items: vec![item("A", 1, "1.00")],
                ..Default::default()
            })
            .await
        })
    });
    let versions: Vec<i64> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().expect("every add succeeds").into_inner().version)
        .collect();
    let cart = get(&mut c, &cart.id).await;
    assert_eq!(cart.items[0].quantity, 50);
    assert_eq!(cart.version, 51);
    assert_eq!(cart.total, "50.00");
    let mut sorted = versions.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (2..=51).collect::<Vec<_>>(),
        "each add got its own version"
    );
}

async fn merges_racing_adds_lose_nothing(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let target = create_cart(&mut c, vec![]).await;
    let mut sources = Vec::new();
    for _ in 0..5 {
        sources.push(create_cart(&mut c, vec![item("M", 2, "1")]).await.id);
    }
    let adds = (0..20).map(|_| {
        let mut c = c.clone();
        let id = target.id.clone();
        tokio::spawn(async move {
            c.add_items(AddItemsRequest {
                cart_id: id,
                items: vec![item("A", 1, "1")],
                ..Default::default()
            })
            .await
            .map(|_| ())
        })
    });
    let merges = sources.into_iter().map(|s| {
        let mut c = c.clone();
        let id = target.id.clone();
        tokio::spawn(async move {
            c.merge_carts(MergeCartsRequest {
                source_cart_id: s,
                target_cart_id: id,
                ..Default::default()
            })
            .await
            .map(|_| ())
        })
    });
    let all: Vec<_> = adds.chain(merges).collect();
    for r in futures::future::join_all(all).await {
        r.unwrap().expect("every call succeeds");
    }
    let cart = get(&mut c, &target.id).await;
    let qty = |sku: &str| {
        cart.items
            .iter()
            .find(|l| l.sku == sku)
            .map_or(0, |l| l.quantity)
    };
    assert_eq!((qty("A"), qty("M")), (20, 10));
    assert_eq!(cart.version, 1 + 20 + 5);
}

both_stores!(
    fifty_parallel_adds_make_fifty,
    merges_racing_adds_lose_nothing
);
