//! Compiles `proto/meridian/v1/*.proto` with the protoc shipped in
//! `protoc-bin-vendored`, so a fresh machine needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("meridian_descriptor.bin"))
        .compile_with_config(
            config,
            &[std::path::PathBuf::from("proto/meridian/v1/meridian.proto")],
            &[std::path::PathBuf::from("proto"), include],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
