//! Compiles `proto/pushgate/v1/push.proto` with protox (pure Rust, no system
//! `protoc`), generates the tonic service, the proto3-JSON serde impls used by
//! the HTTP mirror, and writes the descriptor set served by reflection.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/pushgate/v1/push.proto";
    println!("cargo:rerun-if-changed={proto}");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptors = protox::compile([proto], ["proto"])?;
    let descriptor_path = out.join("pushgate_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&descriptors))?;
    tonic_prost_build::configure().bytes(".pushgate.v1").compile_fds(descriptors.clone())?;
    pbjson_build::Builder::new().register_descriptors(&std::fs::read(&descriptor_path)?)?.build(&[".pushgate.v1"])?;
    Ok(())
}
