//! Where a tailing consumer starts and resumes: no loss, no duplicates,
//! despite skewed clocks. Pure logic, used by the database backends' tailing tasks
//! (MongoDB's `TailPosition`; both backends' receipts and backoff).

use std::fmt;

mod alive;
mod backoff;
mod position;
mod receipts;
mod start;

pub use alive::Alive;
pub use backoff::Backoff;
pub use position::{Admission, LiveFilter, TailPosition};
pub use receipts::{HeldReceipts, MOST_RECEIPTS, RECEIPT_PATIENCE};
pub use start::Start;

/// The 12 bytes of a MongoDB `ObjectId`, whose first four are the creation
/// time in seconds (big-endian). Kept as bytes so the core needs no BSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentId(pub [u8; 12]);

impl DocumentId {
    /// The creation time, in seconds since the Unix epoch.
    pub fn seconds(&self) -> u32 {
        u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }

    /// The smallest id created at `seconds`: the bound of a `$gte` filter.
    pub fn floor(seconds: u32) -> Self {
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&seconds.to_be_bytes());
        DocumentId(bytes)
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocumentId(")?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        write!(f, ")")
    }
}
