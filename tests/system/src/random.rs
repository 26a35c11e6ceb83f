//! A deterministic pseudo-random sequence for loads and fault schedules.

/// A small deterministic pseudo-random sequence (xorshift), so failures can be replayed.
pub struct Lcg(u64);

impl Lcg {
    /// A sequence from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}
