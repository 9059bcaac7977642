//! Test fixture: a valid component that implements some other world, so the
//! gateway must refuse it as a rule.

wit_bindgen::generate!({
    inline: "
        package fixture:other;
        world counter {
            export count: func() -> u32;
        }
    ",
});

struct Counter;

impl Guest for Counter {
    fn count() -> u32 {
        42
    }
}

export!(Counter);
