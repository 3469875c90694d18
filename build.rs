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
    envoy_descriptors(&out_dir)?;
    // The commit the binary is built from, for `warrant_build_info` ("unknown" outside git).
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=WARRANT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    Ok(())
}

/// The descriptor set of Envoy's ext_authz service, from the protos the `envoy-types` crate
/// ships (found through `cargo metadata`), so that reflection on the Check port can describe
/// every service it serves. Envoy's own generated code comes from `envoy-types` itself.
fn envoy_descriptors(out_dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = std::env::var("CARGO_MANIFEST_DIR")?;
    let output = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
        ])
        .arg(std::env::var("TARGET")?)
        .arg("--manifest-path")
        .arg(PathBuf::from(&manifest).join("Cargo.toml"))
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let metadata = String::from_utf8(output.stdout)?;
    // The manifest path of the envoy-types package, without a JSON parser: it is the one
    // `.../envoy-types-<version>/Cargo.toml` in the output.
    let marker = "\"manifest_path\":\"";
    let root = metadata
        .match_indices(marker)
        .map(|(at, _)| &metadata[at + marker.len()..])
        .filter_map(|rest| rest.split('"').next())
        .find(|path| path.contains("envoy-types-") && path.ends_with("Cargo.toml"))
        .map(|path| PathBuf::from(path).with_file_name("proto"))
        .ok_or("cargo metadata names no envoy-types package")?;
    let includes = [
        "data-plane-api",
        "googleapis",
        "protoc-gen-validate",
        "xds",
        "cel-spec",
    ]
    .map(|dir| root.join(dir));
    let descriptors = protox::compile(["envoy/service/auth/v3/external_auth.proto"], includes)?;
    std::fs::write(
        out_dir.join("envoy_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    Ok(())
}
