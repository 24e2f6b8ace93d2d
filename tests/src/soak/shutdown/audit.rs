//! What was published, and what arrived: each publisher's ledger of
//! acknowledged sequence numbers, and the audit of one consumer's
//! deliveries against the ledgers.

use std::collections::HashSet;

use serde_json::Value;
use tbone_dispatch::PublishError;
use tbone_dispatch_tokio::model::RESOURCE_CREATE;

use crate::soak::Row;

/// What one publisher was told: the sequence numbers acknowledged (in the
/// order published) and the errors returned.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// Acknowledged, with whether the acknowledgement came before the
    /// shutdown began (only those are owed to the clients).
    pub(super) acked: Vec<(u64, bool)>,
    /// Errors returned, as text.
    pub(super) errors: Vec<String>,
    /// How many of them were the typed "channel stopped" error.
    pub(super) stopped: u64,
}

impl Ledger {
    pub(super) fn owed(&self) -> impl Iterator<Item = u64> + '_ {
        self.acked.iter().filter(|(_, owed)| *owed).map(|(n, _)| *n)
    }

    pub(super) fn record_error(&mut self, error: &PublishError) {
        if matches!(error, PublishError::Stopped { .. }) {
            self.stopped += 1;
        }
        self.errors.push(error.to_string());
    }
}

/// One consumer's deliveries compared with the ledgers.
#[derive(Debug, Default)]
pub(super) struct Audit {
    delivered: u64,
    pub(super) lost: u64,
    duplicates: u64,
    out_of_order: u64,
    /// Deliveries of events whose publish was not acknowledged.
    phantoms: u64,
    /// Frames that were not events of this scenario.
    foreign: u64,
}

impl Audit {
    /// Adds the comparison of `received` (publisher, sequence number) with
    /// what `ledgers` say was acknowledged.
    pub(super) fn add(&mut self, ledgers: &[Ledger], received: &[(usize, u64)]) {
        let mut seen: Vec<HashSet<u64>> = vec![HashSet::new(); ledgers.len()];
        let mut last: Vec<Option<u64>> = vec![None; ledgers.len()];
        let acked: Vec<HashSet<u64>> = ledgers
            .iter()
            .map(|l| l.acked.iter().map(|(n, _)| *n).collect())
            .collect();
        for &(p, n) in received {
            if p >= ledgers.len() {
                self.foreign += 1;
                continue;
            }
            self.delivered += 1;
            if !seen[p].insert(n) {
                self.duplicates += 1;
                continue;
            }
            if !acked[p].contains(&n) {
                self.phantoms += 1;
            }
            if last[p].is_some_and(|last| n < last) {
                self.out_of_order += 1;
            }
            last[p] = Some(n);
        }
        for (p, ledger) in ledgers.iter().enumerate() {
            self.lost += ledger.owed().filter(|n| !seen[p].contains(n)).count() as u64;
        }
    }

    /// Puts the counters in `row` and checks them.
    pub(super) fn report(&self, row: &mut Row, consumers: &str) {
        row.delivered += self.delivered;
        row.lost += self.lost;
        row.duplicates += self.duplicates;
        row.check(
            self.lost == 0,
            format!("{consumers} lost {} acknowledged events", self.lost),
        );
        row.check(
            self.duplicates == 0,
            format!("{consumers} received {} duplicates", self.duplicates),
        );
        row.check(
            self.out_of_order == 0,
            format!(
                "{consumers} received {} events out of publish order",
                self.out_of_order
            ),
        );
        row.check(
            self.phantoms == 0,
            format!(
                "{consumers} received {} events whose publish failed",
                self.phantoms
            ),
        );
        row.check(
            self.foreign == 0,
            format!(
                "{consumers} received {} frames that are not this scenario's events",
                self.foreign
            ),
        );
    }
}

pub(super) fn acked_total(ledgers: &[Ledger]) -> u64 {
    ledgers.iter().map(|l| l.acked.len() as u64).sum()
}

pub(super) fn errors_total(ledgers: &[Ledger]) -> u64 {
    ledgers.iter().map(|l| l.errors.len() as u64).sum()
}

/// `(publisher, n)` from a TBone frame whose data is `{"p":..,"n":..}`.
pub(super) fn parse_event(text: &str) -> Option<(usize, u64)> {
    let frame: Value = serde_json::from_str(text).ok()?;
    let data = &frame["payload"]["data"];
    Some((
        usize::try_from(data["p"].as_u64()?).ok()?,
        data["n"].as_u64()?,
    ))
}

/// `(writer, n)` from a demo frame whose entry's text is `w<writer>-<n>`.
pub(super) fn parse_entry(text: &str) -> Option<(usize, u64)> {
    let frame: Value = serde_json::from_str(text).ok()?;
    if frame["payload"]["name"] != RESOURCE_CREATE {
        return None;
    }
    let (writer, n) = frame["payload"]["data"]["text"]
        .as_str()?
        .strip_prefix('w')?
        .split_once('-')?;
    Some((writer.parse().ok()?, n.parse().ok()?))
}
