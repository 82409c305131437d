//! The GGUF reader behind `squeeze inspect` and evaluation of GGUF artifacts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = squeeze::formats::gguf::read(std::io::Cursor::new(data));
});
