//! What the `tbone-load` binary shares with its examples: [`allocs`], the
//! allocator that counts live allocations by size.

pub mod allocs;
