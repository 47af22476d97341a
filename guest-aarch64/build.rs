//! Link with `aarch64-rt`'s `image.ld` (section layout) and `memory.ld` (where the image goes in
//! QEMU `virt` RAM). A link argument from the build script applies whatever directory cargo runs
//! in (a `.cargo/config.toml` here would only apply inside `guest-aarch64/`).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=memory.ld");
    println!("cargo:rustc-link-arg-bins=-Timage.ld");
    println!("cargo:rustc-link-arg-bins=-T{dir}/memory.ld");
}
