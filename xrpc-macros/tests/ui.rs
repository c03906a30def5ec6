//! Misuse of `#[service]` is a compile error at the offending item (each `tests/ui/*.rs` with
//! its `.stderr`, as rustc 1.95 prints it); a service of every kind compiles
//! (`tests/ui/pass/`). `TRYBUILD=overwrite` rewrites the `.stderr` files.

#[test]
fn misuse_is_an_error_at_the_item() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
