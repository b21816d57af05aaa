//! `uniffi-bindgen`, built from the workspace's own uniffi so the generated Swift, Kotlin and
//! Python always match the scaffolding compiled into `covey-ffi`. See `bindings/README.md`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
