//! Generates the gRPC messages and client of `proto/echo.proto`, and the `floor` yardstick's
//! `proto/yardstick.proto`, with protox (pure Rust, no protoc needed) and tonic-prost-build.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    // The builder does not emit this itself: without it any change anywhere reruns the script.
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["echo.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // Payloads as `Bytes`: decoded zero-copy out of the receive buffer, and the shared
        // pattern buffer can be sent without a copy.
        .bytes(".")
        // The server is routed by hand (see src/grpc/server.rs): the generated unary handler
        // cannot send trailing metadata with an OK status.
        .build_server(false)
        .build_transport(false)
        .compile_fds(fds)?;
    // The `floor` command's gRPC yardstick: stock generated server and client.
    let fds = protox::compile(["yardstick.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".")
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
