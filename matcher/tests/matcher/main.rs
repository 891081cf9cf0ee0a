//! `facepay-matcher`'s integration tests, one binary: every branch of the match policy, the
//! default policy's accuracy on the synthetic model, and sharded galleries.

mod accuracy;
mod identify;
mod shards;
