//! Passes the target triple to the tests, which compile the C harness for it with `cc`.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Ok(target) = std::env::var("TARGET") {
        println!("cargo:rustc-env=BMS_FFI_TARGET={target}");
    }
}
