//! Compile-time behaviour of `#[derive(Event)]` and `#[handler]`: one case per
//! file, the expected diagnostics in the `.stderr` beside each failing case.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
