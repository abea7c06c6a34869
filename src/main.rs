//! The `watchd` binary. `no_main` keeps std's runtime from setting SIGPIPE to ignored before
//! we can see it: the command must inherit the disposition watchd was given. (Under `cfg(test)`
//! the test harness needs its own main, and there is nothing here to test.)
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    watchd::entry()
}
