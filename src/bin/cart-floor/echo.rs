//! The echo: the fixed cart GetCart of the id `echo` answers without the
//! database (the cost of gRPC alone).

use cart_service::proto;
use uuid::Uuid;

/// The echo's answer: a 3-line cart, as the bench's seeded carts are.
pub(crate) fn echo_cart() -> proto::Cart {
    let mut cart = proto::Cart {
        id: Uuid::nil().to_string(),
        currency: "USD".into(),
        channel: "default".into(),
        version: 4,
        ..Default::default()
    };
    for n in 0..3 {
        cart.items.push(proto::LineItem {
            sku: format!("SKU-{n:04}"),
            name: "Bench item".into(),
            quantity: 1,
            unit_price: "4.99".into(),
            list_price: "4.99".into(),
            line_total: "4.99".into(),
            ..Default::default()
        });
    }
    cart
}
