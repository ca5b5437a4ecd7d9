//! Each replica remembers the carts it read or wrote, so that a change is
//! its write alone and a read sends only what changed. Other replicas
//! change the same carts meanwhile: nothing a replica remembers may lose
//! an update, refuse a change the stored cart allows, or answer anything
//! but what is stored.

use std::collections::BTreeMap;

use cart_service::proto::{
    AddItemsRequest, Cart, ClearCartRequest, ItemInput, RemoveItemsRequest, SetItemsRequest,
    UpdateCartRequest,
};

use crate::helpers::{Client, create_cart, fresh_database, get, item, spawn_app_on, submit};

/// AddItems of `items` to the cart `id`, at `expected_version` (0: any).
async fn add(
    client: &mut Client,
    id: &str,
    items: Vec<ItemInput>,
    expected_version: i64,
) -> Result<Cart, tonic::Status> {
    client
        .add_items(AddItemsRequest {
            cart_id: id.into(),
            items,
            expected_version,
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The answer of a change is what both replicas read next: the one that
/// wrote it (and remembers it) and the other.
async fn read_everywhere(writer: &mut Client, other: &mut Client, answer: &Cart) {
    assert_eq!(
        &get(other, &answer.id).await,
        answer,
        "the other replica reads the answer"
    );
    assert_eq!(
        &get(writer, &answer.id).await,
        answer,
        "the replica that wrote it reads it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_alternating_between_two_replicas_lose_nothing() {
    let db = fresh_database().await;
    let a = spawn_app_on(&db, |_| {}).await;
    let b = spawn_app_on(&db, |_| {}).await;
    let mut clients = [a.client.clone(), b.client.clone()];
    let cart = create_cart(&mut clients[0], vec![]).await;
    const CHANGES: i64 = 30;
    for i in 0..CHANGES {
        let client = &mut clients[(i % 2) as usize];
        if i % 5 == 4 {
            client
                .update_cart(UpdateCartRequest {
                    cart_id: cart.id.clone(),
                    description: Some(format!("change {i}")),
                    ..Default::default()
                })
                .await
                .unwrap();
        } else {
            add(client, &cart.id, vec![item("S", 1, "1")], 0)
                .await
                .unwrap();
        }
    }
    for client in &mut clients {
        let now = get(client, &cart.id).await;
        assert_eq!(now.version, CHANGES + 1);
        assert_eq!(now.items[0].quantity as i64, CHANGES - CHANGES / 5);
        assert_eq!(now.description, format!("change {}", CHANGES - 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_refused_on_what_a_replica_remembers_is_judged_on_the_stored_cart() {
    let db = fresh_database().await;
    let a = spawn_app_on(&db, |_| {}).await;
    let b = spawn_app_on(&db, |_| {}).await;
    let (mut ca, mut cb) = (a.client.clone(), b.client.clone());
    let cart = create_cart(&mut ca, vec![item("A", 1, "1")]).await;
    // A remembers version 1; B makes version 2.
    let on_b = add(&mut cb, &cart.id, vec![item("B", 1, "1")], 0)
        .await
        .unwrap();
    // Right for the stored cart, wrong for what A remembers.
    let on_a = add(&mut ca, &cart.id, vec![item("C", 1, "1")], on_b.version)
        .await
        .expect("expected_version of the stored cart is accepted");
    assert_eq!(on_a.version, 3);
    let skus: Vec<&str> = on_a.items.iter().map(|l| l.sku.as_str()).collect();
    assert_eq!(skus, ["A", "B", "C"]);
    // B submits: A, remembering an ACTIVE cart, must refuse a change now.
    submit(&mut cb, &cart.id).await;
    let refused = add(&mut ca, &cart.id, vec![item("D", 1, "1")], 0)
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_what_any_replica_reads_afterwards() {
    let db = fresh_database().await;
    let a = spawn_app_on(&db, |_| {}).await;
    let b = spawn_app_on(&db, |_| {}).await;
    let (mut ca, mut cb) = (a.client.clone(), b.client.clone());
    let mut with_attributes = item("X", 2, "3.50");
    with_attributes.attributes = BTreeMap::from([("size".into(), "M".into())]);
    with_attributes.list_price = "4.00".into();
    let cart = create_cart(&mut ca, vec![item("A", 1, "1.10"), item("B", 1, "2")]).await;
    let id = cart.id.clone();
    let mut answers = vec![cart];
    read_everywhere(&mut ca, &mut cb, &answers[0]).await;
    answers.push(
        add(&mut ca, &id, vec![with_attributes, item("C", 1, "1")], 0)
            .await
            .unwrap(),
    );
    read_everywhere(&mut ca, &mut cb, answers.last().unwrap()).await;
    answers.push(
        ca.set_items(SetItemsRequest {
            cart_id: id.clone(),
            // Given in another order, an upsert, a removal and a new line.
            items: vec![
                item("C", 5, "1"),
                item("A", 0, "1"),
                item("D", 1, "9.99"),
                item("B", 3, "2"),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner(),
    );
    read_everywhere(&mut ca, &mut cb, answers.last().unwrap()).await;
    answers.push(
        ca.remove_items(RemoveItemsRequest {
            cart_id: id.clone(),
            skus: vec!["B".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner(),
    );
    read_everywhere(&mut ca, &mut cb, answers.last().unwrap()).await;
    answers.push(
        ca.update_cart(UpdateCartRequest {
            cart_id: id.clone(),
            customer_id: Some("c-1".into()),
            description: Some("gift".into()),
            metadata: BTreeMap::from([("k".into(), "v".into())]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner(),
    );
    read_everywhere(&mut ca, &mut cb, answers.last().unwrap()).await;
    answers.push(
        add(&mut ca, &id, vec![item("A", 2, "1.10")], 0)
            .await
            .unwrap(),
    );
    read_everywhere(&mut ca, &mut cb, answers.last().unwrap()).await;
    answers.push(
        ca.clear_cart(ClearCartRequest {
            cart_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner(),
    );
    read_everywhere(&mut ca, &mut cb, answers.last().unwrap()).await;
    answers.push(add(&mut ca, &id, vec![item("E", 1, "5")], 0).await.unwrap());
    read_everywhere(&mut ca, &mut cb, answers.last().unwrap()).await;
    answers.push(submit(&mut ca, &id).await);
    read_everywhere(&mut ca, &mut cb, answers.last().unwrap()).await;
    for (n, answer) in answers.iter().enumerate() {
        assert_eq!(answer.version, n as i64 + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nothing_remembered_every_change_reads_its_cart() {
    let db = fresh_database().await;
    let a = spawn_app_on(&db, |c| c.cache_mib = 0).await;
    let b = spawn_app_on(&db, |c| c.cache_mib = 0).await;
    let (mut ca, mut cb) = (a.client.clone(), b.client.clone());
    let cart = create_cart(&mut ca, vec![]).await;
    let mut last = cart.clone();
    for i in 0..6 {
        let client = if i % 2 == 0 { &mut ca } else { &mut cb };
        last = add(client, &cart.id, vec![item("S", 1, "1")], 0)
            .await
            .unwrap();
    }
    assert_eq!((last.version, last.items[0].quantity), (7, 6));
    read_everywhere(&mut ca, &mut cb, &last).await;
}
