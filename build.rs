//! Compiles the protos with protox (pure Rust, so no system `protoc`) and
//! writes the file descriptor set that server reflection serves.

use std::{env, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/cart/v1/cart.proto",
        "proto/google/rpc/error_details.proto",
        "proto/hipstershop/demo.proto",
    ];
    println!("cargo:rerun-if-changed=proto");

    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("cart_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        // Ordered maps make request encoding deterministic, which the
        // idempotency fingerprint relies on.
        .btree_map(".")
        .extern_path(".google.rpc", "::tonic_types")
        // Undecodable requests are INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::grpc::codec::CartCodec")
        .compile_fds(fds)?;
    Ok(())
}
