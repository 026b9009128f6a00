//! A valid component of the wrong world, to test that the host refuses it.
wit_bindgen::generate!({ world: "calculator", path: "wit" });

struct Calculator;

impl Guest for Calculator {
    fn add(a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }
}

export!(Calculator);
