//! Link the guest with `linker.ld` (load address 0x4020_0000 in QEMU virt RAM). A link argument from
//! the build script applies whatever directory cargo is run from (a `.cargo/config.toml` here would
//! only apply when cargo runs inside `guest-aarch64/`).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
}
