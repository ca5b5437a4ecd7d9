//! Upgrading a database of the schema before lines had their own table
//! (migration V6): carts, their history and idempotency keys written the
//! old way read back exactly, and change on as usual.

use std::collections::BTreeMap;

use cart_service::{
    domain::{
        Amount, Cart, Command, ConfirmationType, Currency, Details, ItemInput, NewCart, Policy,
        TenantId, now,
    },
    ports::Isolation,
    proto,
    store::postgres::PgStore,
};
use uuid::Uuid;

use crate::helpers::{fresh_database, get, item, spawn_app_on};

/// The last version of the old schema.
const OLD_SCHEMA: i32 = 5;

fn line(sku: &str, quantity: i32, price: &str) -> ItemInput {
    ItemInput {
        sku: sku.into(),
        name: format!("{sku} item"),
        quantity,
        unit_price: Amount::parse(price, "unit_price").unwrap(),
        list_price: None,
        attributes: BTreeMap::from([("colour".to_string(), format!("{sku}-blue"))]),
    }
}

/// A cart and its first three versions, as the domain makes them.
fn history() -> Vec<Cart> {
    let policy = Policy::default();
    let new = NewCart {
        customer_id: "c1".into(),
        reference: "order-1".into(),
        currency: Currency::parse("USD").unwrap(),
        country: None,
        channel: "web".into(),
        description: "before".into(),
        metadata: BTreeMap::from([("k".to_string(), "v".to_string())]),
        confirmation_type: ConfirmationType::Automatic,
        callback_url: String::new(),
        callback_cancel_url: String::new(),
        items: vec![
            line("A", 1, "2.50"),
            line("B", 2, "1.00"),
            line("C", 1, "9.99"),
        ],
    };
    let mut cart = Cart::create(Uuid::new_v4(), new, now(), &policy).unwrap();
    let mut versions = vec![cart.clone()];
    let v2 = Command::AddItems(vec![line("B", 3, "1.10")]);
    let v3 = Command::Update(Details {
        description: Some("after".into()),
        ..Default::default()
    });
    for cmd in [v2, v3] {
        cart.apply(&cmd, 0, now(), &policy).unwrap();
        versions.push(cart.clone());
    }
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carts_written_on_the_old_schema_read_back_after_the_upgrade() {
    let db = fresh_database().await;
    PgStore::migrate_to(&db, OLD_SCHEMA).await.unwrap();
    let versions = history();
    let current = versions.last().unwrap();
    let (sql, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let doc = |c: &Cart| serde_json::to_value(c).unwrap();
    sql.execute(
        "INSERT INTO carts (tenant, id, version, status, customer_id, reference, created_at, updated_at, \
         expires_at, create_fingerprint, doc) VALUES ('default', $1, $2, 'ACTIVE', 'c1', 'order-1', $3, $4, $5, $6, $7)",
        &[
            &current.id,
            &current.version,
            &current.created_at,
            &current.updated_at,
            &current.expires_at,
            &&[7u8; 32][..],
            &doc(current),
        ],
    )
    .await
    .unwrap();
    for (c, kind) in versions
        .iter()
        .zip(["CREATED", "ITEMS_CHANGED", "DETAILS_CHANGED"])
    {
        sql.execute(
            "INSERT INTO cart_events (tenant, cart_id, version, type, status, previous_status, occurred_at, cart) \
             VALUES ('default', $1, $2, $3, 'ACTIVE', CASE WHEN $2::bigint = 1 THEN NULL ELSE 'ACTIVE' END, $4, $5)",
            &[&c.id, &c.version, &kind, &c.updated_at, &doc(c)],
        )
        .await
        .unwrap();
    }
    sql.execute(
        "INSERT INTO idempotency_keys (tenant, key, fingerprint, response, created_at) \
         VALUES ('default', 'add-b', $1, $2, $3)",
        &[&&[9u8; 32][..], &doc(&versions[1]), &versions[1].updated_at],
    )
    .await
    .unwrap();

    // The service starts on it and migrates it.
    let app = spawn_app_on(&db, |_| {}).await;
    let tenant = TenantId("default".into());
    assert_eq!(&app.store.get(&tenant, current.id).await.unwrap(), current);
    let mut unit = app.store.begin(Isolation::Optimistic).await.unwrap();
    let loaded = unit.load(&tenant, &[], Some("add-b")).await.unwrap();
    unit.rollback().await;
    let remembered = loaded.remembered.expect("the key survives");
    assert_eq!(
        remembered.response, versions[1],
        "the key answers version 2 exactly"
    );
    assert_eq!(remembered.fingerprint, vec![9u8; 32]);

    // Its history replays exactly, version by version.
    let replay = app
        .store
        .cart_events(&tenant, current.id, 0, 10)
        .await
        .unwrap();
    let replayed: Vec<&Cart> = replay.iter().map(|e| &e.cart).collect();
    assert_eq!(replayed, versions.iter().collect::<Vec<_>>());

    // It changes on as usual: a line that stays keeps its place, a new one
    // goes last, and the history holds both the old and the new versions.
    let mut c = app.client.clone();
    let id = current.id.to_string();
    for sku in ["A", "D"] {
        c.add_items(proto::AddItemsRequest {
            cart_id: id.clone(),
            items: vec![item(sku, 1, "3")],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let now = get(&mut c, &id).await;
    let lines: Vec<(&str, i32)> = now
        .items
        .iter()
        .map(|l| (l.sku.as_str(), l.quantity))
        .collect();
    assert_eq!(lines, vec![("A", 2), ("B", 5), ("C", 1), ("D", 1)]);
    assert_eq!(now.description, "after");
    let replay = app
        .store
        .cart_events(&tenant, current.id, 0, 10)
        .await
        .unwrap();
    assert_eq!(replay.len(), 5);
    assert_eq!(
        &replay[2].cart, current,
        "version 3 unchanged by what followed"
    );
    assert_eq!(replay[3].cart.items[0].quantity, 2);
    assert_eq!(replay[3].cart.items.len(), 3, "D came at version 5");
}
