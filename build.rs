//! Compiles `proto/` into Rust with protox (no system `protoc`) and tonic-prost-build, and writes
//! the file descriptor set that gRPC server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/warrant/v1/authorizer.proto",
        "proto/warrant/v1/admin.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let file_descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("warrant_descriptor.bin"),
        prost::Message::encode_to_vec(&file_descriptors),
    )?;
    tonic_prost_build::configure().compile_fds(file_descriptors)?;
    Ok(())
}
