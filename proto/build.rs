//! Compiles the `.proto` files under `proto/proto` with protox (pure Rust, no system protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/metapb.proto",
        "proto/errorpb.proto",
        "proto/eraftpb.proto",
        "proto/pdpb.proto",
        "proto/keyspacepb.proto",
        "proto/kvrpcpb.proto",
        "proto/tikvpb.proto",
        "proto/flotillapb.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
