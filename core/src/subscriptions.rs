//! The subscription table: which carriers receive which events.

use std::collections::HashMap;
use std::sync::Arc;

use crate::CarrierId;

/// Which carriers are subscribed to which events of one channel: a plain data
/// structure with no IO and no locking, so its rules can be tested alone.
///
/// Looking up the subscribers of an event costs the same whatever the number
/// of other events and subscriptions, and returns a shared snapshot, so a
/// channel can deliver to ten thousand carriers without holding its lock.
///
/// ```
/// use tbone_dispatch::{CarrierId, Subscriptions};
///
/// let (a, b) = (CarrierId::next(), CarrierId::next());
/// let mut table = Subscriptions::new();
/// assert!(table.subscribe("resource_create", a, "socket a"));
/// assert!(!table.subscribe("resource_create", a, "socket a")); // already there
/// table.subscribe("resource_create", b, "socket b");
/// table.subscribe("resource_delete", a, "socket a");
///
/// let subscribers = table.subscribers("resource_create");
/// assert_eq!(subscribers.len(), 2);
///
/// assert_eq!(table.remove_carrier(a), 2); // gone from both events
/// assert_eq!(table.subscription_count(), 1);
/// ```
#[derive(Debug)]
pub struct Subscriptions<C> {
    by_event: HashMap<Arc<str>, Arc<Vec<(CarrierId, C)>>>,
    by_carrier: HashMap<CarrierId, Vec<Arc<str>>>,
    count: usize,
}

impl<C> Default for Subscriptions<C> {
    fn default() -> Self {
        Subscriptions {
            by_event: HashMap::new(),
            by_carrier: HashMap::new(),
            count: 0,
        }
    }
}

impl<C: Clone> Subscriptions<C> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes `carrier` to `event`. Returns false if it already was.
    pub fn subscribe(&mut self, event: &str, id: CarrierId, carrier: C) -> bool {
        let events = self.by_carrier.entry(id).or_default();
        if events.iter().any(|e| &**e == event) {
            return false;
        }
        let name = match self.by_event.get_key_value(event) {
            Some((name, _)) => name.clone(),
            None => Arc::from(event),
        };
        let list = self.by_event.entry(name.clone()).or_default();
        // Copies only while a delivery still holds the previous snapshot.
        Arc::make_mut(list).push((id, carrier));
        // Most carriers of an idle socket hold one event: a list of one
        // (a Vec's first growth would make room for four).
        if events.is_empty() {
            events.reserve_exact(1);
        }
        events.push(name);
        self.count += 1;
        true
    }

    /// Unsubscribes the carrier from `event`. Returns whether it was
    /// subscribed.
    pub fn unsubscribe(&mut self, event: &str, id: CarrierId) -> bool {
        let Some(events) = self.by_carrier.get_mut(&id) else {
            return false;
        };
        let Some(position) = events.iter().position(|e| &**e == event) else {
            return false;
        };
        events.swap_remove(position);
        if events.is_empty() {
            self.by_carrier.remove(&id);
        }
        self.detach(event, id);
        true
    }

    /// Removes the carrier from every event. Returns how many subscriptions
    /// it had.
    pub fn remove_carrier(&mut self, id: CarrierId) -> usize {
        let Some(events) = self.by_carrier.remove(&id) else {
            return 0;
        };
        for event in &events {
            self.detach(event, id);
        }
        events.len()
    }

    fn detach(&mut self, event: &str, id: CarrierId) {
        let Some(list) = self.by_event.get_mut(event) else {
            return;
        };
        if list.len() == 1 {
            self.by_event.remove(event);
        } else {
            let list = Arc::make_mut(list);
            if let Some(position) = list.iter().position(|(c, _)| *c == id) {
                list.swap_remove(position);
            }
        }
        self.count -= 1;
    }

    /// The carriers subscribed to `event`, as a snapshot that later changes
    /// to the table do not affect.
    pub fn subscribers(&self, event: &str) -> Arc<Vec<(CarrierId, C)>> {
        self.by_event.get(event).cloned().unwrap_or_default()
    }

    /// Whether `event` has any subscriber.
    pub fn has_subscribers(&self, event: &str) -> bool {
        self.by_event.contains_key(event)
    }

    /// The events the carrier is subscribed to.
    pub fn events_of(&self, id: CarrierId) -> impl Iterator<Item = &str> {
        self.by_carrier
            .get(&id)
            .into_iter()
            .flat_map(|events| events.iter().map(|e| &**e))
    }

    /// Total number of (event, carrier) subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.count
    }

    /// Number of distinct carriers with at least one subscription.
    pub fn carrier_count(&self) -> usize {
        self.by_carrier.len()
    }

    /// Number of events with at least one subscriber.
    pub fn event_count(&self) -> usize {
        self.by_event.len()
    }

    /// Whether the table holds no subscription.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every subscribed carrier, once each.
    ///
    /// ```
    /// use tbone_dispatch::{CarrierId, Subscriptions};
    ///
    /// let a = CarrierId::next();
    /// let mut table = Subscriptions::new();
    /// table.subscribe("resource_create", a, "socket a");
    /// table.subscribe("resource_delete", a, "socket a");
    /// assert_eq!(table.carriers(), vec![(a, "socket a")]);
    /// ```
    pub fn carriers(&self) -> Vec<(CarrierId, C)> {
        let mut seen = std::collections::HashSet::new();
        self.by_event
            .values()
            .flat_map(|subscribers| subscribers.iter())
            .filter(|(id, _)| seen.insert(*id))
            .cloned()
            .collect()
    }

    /// Removes every subscription, returning the carriers that had one.
    pub fn clear(&mut self) -> Vec<CarrierId> {
        let ids = self.by_carrier.keys().copied().collect();
        self.by_event.clear();
        self.by_carrier.clear();
        self.count = 0;
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_is_not_changed_by_later_edits() {
        let (a, b) = (CarrierId::next(), CarrierId::next());
        let mut t = Subscriptions::new();
        t.subscribe("e", a, 1);
        let snap = t.subscribers("e");
        t.subscribe("e", b, 2);
        t.unsubscribe("e", a);
        assert_eq!(snap.iter().map(|(_, c)| *c).collect::<Vec<_>>(), vec![1]);
        assert_eq!(
            t.subscribers("e")
                .iter()
                .map(|(_, c)| *c)
                .collect::<Vec<_>>(),
            vec![2]
        );
    }

    #[test]
    fn counts_stay_consistent_through_churn() {
        let ids: Vec<_> = (0..50).map(|_| CarrierId::next()).collect();
        let mut t = Subscriptions::new();
        for (i, id) in ids.iter().enumerate() {
            for e in 0..(i % 5 + 1) {
                assert!(t.subscribe(&format!("ev{e}"), *id, i));
            }
        }
        assert_eq!(
            t.subscription_count(),
            (0..50).map(|i| i % 5 + 1).sum::<usize>()
        );
        for (i, id) in ids.iter().enumerate() {
            if i % 2 == 0 {
                assert_eq!(t.remove_carrier(*id), i % 5 + 1);
            } else {
                for e in 0..(i % 5 + 1) {
                    assert!(t.unsubscribe(&format!("ev{e}"), *id));
                    assert!(!t.unsubscribe(&format!("ev{e}"), *id));
                }
            }
        }
        assert!(t.is_empty());
        assert_eq!(t.carrier_count(), 0);
        assert_eq!(t.event_count(), 0);
    }

    #[test]
    fn events_of_lists_a_carriers_events() {
        let a = CarrierId::next();
        let mut t = Subscriptions::new();
        t.subscribe("x", a, ());
        t.subscribe("y", a, ());
        let mut events: Vec<_> = t.events_of(a).collect();
        events.sort();
        assert_eq!(events, vec!["x", "y"]);
        assert_eq!(t.clear(), vec![a]);
        assert_eq!(t.events_of(a).count(), 0);
    }
}
