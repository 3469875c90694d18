//! The generated protobuf and gRPC code for `warrant.v1`, and the descriptor set that server
//! reflection serves.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("warrant.v1");

/// The encoded `FileDescriptorSet` of `proto/`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/warrant_descriptor.bin"));
