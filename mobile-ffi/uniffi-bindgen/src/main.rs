//! `uniffi-bindgen`: generates the Kotlin, Swift and Python bindings of `concord-ffi`
//! (`uniffi-bindgen generate --library libconcord_ffi.so --language kotlin --out-dir DIR`).
//! See `mobile-ffi/scripts/bindings.sh`.

fn main() {
    uniffi::uniffi_bindgen_main();
}
