//! The generated `pushgate.v1` protobuf types, gRPC client and server stubs,
//! and their proto3-JSON serde implementations (for the `/v1/*` mirror).
//! The contract itself, with what every field means, is
//! `proto/pushgate/v1/push.proto`.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("pushgate.v1");
include!(concat!(env!("OUT_DIR"), "/pushgate.v1.serde.rs"));

/// The encoded file descriptor set of `pushgate.v1`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pushgate_descriptor.bin"));
