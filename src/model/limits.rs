//! The largest sizes scalenet builds. A config comes from a file that may lie; these bounds keep
//! a hostile or mistyped one from asking for more memory than any machine has.

/// The largest model scalenet builds: 10^11 parameters (400 GB in f32), 40x the largest ViT
/// that timm ships.
pub const MAX_PARAMS: u128 = 100_000_000_000;

/// The most positions a grown model may have: 200x the deepest ViT timm ships.
pub const MAX_POSITIONS: usize = 10_000;
