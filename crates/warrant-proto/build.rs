//! Compiles the workspace's `proto/` into Rust with protox (no system `protoc`) and
//! tonic-prost-build, and writes the file descriptor sets that gRPC server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The protos are the workspace's, at its root.
    let root = workspace_root()?;
    let protos = [
        "proto/warrant/v1/authorizer.proto",
        "proto/warrant/v1/admin.proto",
    ]
    .map(|proto| root.join(proto));
    println!("cargo:rerun-if-changed={}", root.join("proto").display());
    let file_descriptors = protox::compile(protos, [root.join("proto")])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("warrant_descriptor.bin"),
        prost::Message::encode_to_vec(&file_descriptors),
    )?;
    tonic_prost_build::configure().compile_fds(file_descriptors)?;
    envoy_descriptors(&out_dir)?;
    Ok(())
}

/// The descriptor set of Envoy's ext_authz service, from the protos the `envoy-types` crate
/// ships, so that reflection on the Check port can describe every service it serves. Envoy's
/// own generated code comes from `envoy-types` itself. The crate's sources are found in
/// Cargo's registry (the version Cargo.lock names), else through `cargo metadata`; if neither
/// finds them, reflection lists Envoy's service without describing it, and the build says so.
fn envoy_descriptors(out_dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let target = out_dir.join("envoy_descriptor.bin");
    let Some(root) = envoy_types_protos() else {
        println!(
            "cargo:warning=envoy-types' protos not found: reflection will not describe Envoy's service"
        );
        std::fs::write(&target, [])?;
        return Ok(());
    };
    let includes = [
        "data-plane-api",
        "googleapis",
        "protoc-gen-validate",
        "xds",
        "cel-spec",
    ]
    .map(|dir| root.join(dir));
    let descriptors = protox::compile(["envoy/service/auth/v3/external_auth.proto"], includes)?;
    std::fs::write(&target, prost::Message::encode_to_vec(&descriptors))?;
    Ok(())
}

/// The `proto` folder of the locked envoy-types package.
fn envoy_types_protos() -> Option<PathBuf> {
    let manifest = workspace_root().ok()?;
    let lock = std::fs::read_to_string(manifest.join("Cargo.lock")).ok()?;
    let version = lock
        .split("[[package]]")
        .find(|package| package.contains("name = \"envoy-types\""))?
        .lines()
        .find_map(|line| line.strip_prefix("version = \""))?
        .trim_end_matches('"')
        .to_owned();
    let wanted = format!("envoy-types-{version}");
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let in_registry = cargo_home.and_then(|home| {
        std::fs::read_dir(home.join("registry").join("src"))
            .ok()?
            .flatten()
            .map(|index| index.path().join(&wanted).join("proto"))
            .find(|path| path.is_dir())
    });
    in_registry.or_else(|| from_cargo_metadata(&manifest, &wanted))
}

/// The same, asked of `cargo metadata` (for vendored or unusual set-ups).
fn from_cargo_metadata(manifest: &std::path::Path, wanted: &str) -> Option<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
        ])
        .arg(std::env::var("TARGET").ok()?)
        .arg("--manifest-path")
        .arg(manifest.join("Cargo.toml"))
        .output()
        .ok()
        .filter(|output| output.status.success())?;
    let metadata = String::from_utf8(output.stdout).ok()?;
    let marker = "\"manifest_path\":\"";
    metadata
        .match_indices(marker)
        .map(|(at, _)| &metadata[at + marker.len()..])
        .filter_map(|rest| rest.split('"').next())
        .find(|path| path.contains(wanted) && path.ends_with("Cargo.toml"))
        .map(|path| PathBuf::from(path).with_file_name("proto"))
        .filter(|path| path.is_dir())
}

/// The workspace's root: two folders above this crate's.
fn workspace_root() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    Ok(manifest
        .parent()
        .and_then(std::path::Path::parent)
        .ok_or("this crate is not two folders below the workspace's root")?
        .to_path_buf())
}
