//! Generates the berth.v1 types with a vendored protoc, so a machine without
//! a system protoc still builds.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_with_config(config, &["berth/v1/berth.proto"], &["."])?;
    Ok(())
}
