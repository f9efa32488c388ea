//! Who may act on a service right now: the owner's permit table.
//!
//! A *change* (deploy, restart, rollback, removal, env change, env-file
//! check) holds its service's permit for its whole length; a second change of
//! the same service waits in a queue behind it, first come first served. The
//! reconciler and the memory-pressure policy take *quiet* permits, only when
//! the service is free and nobody waits, and never queue: they look again at
//! their next pass.
//!
//! A [`Permit`] is a guard held by the worker; dropping it (done, failed,
//! panicked) tells the owner over an unbounded channel, which is bounded in
//! practice by the number of permits handed out: one message per permit.
//! Owned by the supervisor's owner task; nothing here blocks or does I/O.

use std::collections::{HashMap, VecDeque};

use tokio::sync::{mpsc, oneshot};

/// What kind of work holds a permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// A change: `ps` shows the service as "deploying"; others queue.
    Change,
    /// A reconcile pass or a pressure-policy stop: brief, not shown.
    Quiet,
}

/// The right to act on one service, until dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    id: u64,
    service: String,
    released: Option<mpsc::UnboundedSender<u64>>,
}

impl Permit {
    /// The service this permit is for.
    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    /// Forgets the permit without telling the owner (the owner already did).
    fn defuse(mut self) -> u64 {
        self.released = None;
        self.id
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(tx) = self.released.take() {
            // The owner is gone when shutting down; nothing left to free then.
            let _ = tx.send(self.id);
        }
    }
}

/// The answer to a change asking for its service.
#[derive(Debug)]
pub(crate) enum Acquired {
    /// The service was free.
    Now(Permit),
    /// Another change holds it; the permit arrives when it is done. A closed
    /// channel means the agent is shutting down and the change never starts.
    Queued(oneshot::Receiver<Permit>),
}

/// What [`Permits::release`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Released {
    /// The service.
    pub service: String,
    /// Who held it.
    pub was: Holder,
    /// Whether a queued change holds it now.
    pub handed_on: bool,
}

/// The permit table.
#[derive(Debug)]
pub(crate) struct Permits {
    next_id: u64,
    held: HashMap<String, (u64, Holder)>,
    by_id: HashMap<u64, String>,
    waiting: HashMap<String, VecDeque<oneshot::Sender<Permit>>>,
    released: mpsc::UnboundedSender<u64>,
}

impl Permits {
    /// An empty table; dropped permits report to `released`.
    pub(crate) fn new(released: mpsc::UnboundedSender<u64>) -> Self {
        Permits {
            next_id: 1,
            held: HashMap::new(),
            by_id: HashMap::new(),
            waiting: HashMap::new(),
            released,
        }
    }

    fn make(&mut self, service: &str, holder: Holder) -> Permit {
        let id = self.next_id;
        self.next_id += 1;
        self.held.insert(service.to_owned(), (id, holder));
        self.by_id.insert(id, service.to_owned());
        Permit {
            id,
            service: service.to_owned(),
            released: Some(self.released.clone()),
        }
    }

    /// A change of `service`: at once if it is free, else queued.
    pub(crate) fn acquire(&mut self, service: &str) -> Acquired {
        if self.held.contains_key(service) {
            let (tx, rx) = oneshot::channel();
            self.waiting.entry(service.to_owned()).or_default().push_back(tx);
            Acquired::Queued(rx)
        } else {
            Acquired::Now(self.make(service, Holder::Change))
        }
    }

    /// A permit only if `service` is free and no change waits for it.
    pub(crate) fn try_acquire(&mut self, service: &str, holder: Holder) -> Option<Permit> {
        (!self.held.contains_key(service) && !self.waiting.contains_key(service)).then(|| self.make(service, holder))
    }

    /// Ends permit `id` and hands the service to the first queued change
    /// still waiting. `None` for an id that is not held (already handled).
    pub(crate) fn release(&mut self, id: u64) -> Option<Released> {
        let service = self.by_id.remove(&id)?;
        let (_, was) = self.held.remove(&service)?;
        let mut handed_on = false;
        if let Some(queue) = self.waiting.get_mut(&service) {
            let mut queue = std::mem::take(queue);
            while let Some(waiter) = queue.pop_front() {
                let permit = self.make(&service, Holder::Change);
                match waiter.send(permit) {
                    Ok(()) => {
                        handed_on = true;
                        break;
                    }
                    // That caller went away (its client hung up): next one.
                    Err(permit) => {
                        let id = permit.defuse();
                        self.by_id.remove(&id);
                        self.held.remove(&service);
                    }
                }
            }
            if queue.is_empty() {
                self.waiting.remove(&service);
            } else {
                self.waiting.insert(service.clone(), queue);
            }
        }
        Some(Released {
            service,
            was,
            handed_on,
        })
    }

    /// Who holds `service`, if anyone.
    pub(crate) fn holder(&self, service: &str) -> Option<Holder> {
        self.held.get(service).map(|(_, h)| *h)
    }

    /// Services a change holds.
    pub(crate) fn changing(&self) -> impl Iterator<Item = &str> {
        self.held
            .iter()
            .filter(|(_, (_, h))| *h == Holder::Change)
            .map(|(s, _)| s.as_str())
    }

    /// No permit is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Shutting down: queued changes are dropped (their callers are told
    /// the agent is stopping); held permits run to their end.
    pub(crate) fn refuse_waiting(&mut self) {
        self.waiting.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> (Permits, mpsc::UnboundedReceiver<u64>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Permits::new(tx), rx)
    }

    #[test]
    fn a_second_change_queues_and_gets_the_permit_when_the_first_ends() {
        let (mut t, mut released) = table();
        let Acquired::Now(first) = t.acquire("web") else {
            panic!("web was free")
        };
        assert_eq!(t.holder("web"), Some(Holder::Change));
        let Acquired::Queued(mut second) = t.acquire("web") else {
            panic!("web is held")
        };
        assert!(t.try_acquire("web", Holder::Quiet).is_none(), "held");
        let Acquired::Now(_db) = t.acquire("db") else {
            panic!("other services are independent")
        };
        drop(first);
        let id = released.try_recv().expect("the drop reports");
        let r = t.release(id).expect("held");
        assert_eq!(
            r,
            Released {
                service: "web".into(),
                was: Holder::Change,
                handed_on: true
            }
        );
        let permit = second.try_recv().expect("handed on");
        assert_eq!(permit.service(), "web");
        assert_eq!(t.release(id), None, "a release is handled once");
    }

    #[test]
    fn a_waiter_that_went_away_is_skipped() {
        let (mut t, mut released) = table();
        let Acquired::Now(first) = t.acquire("web") else {
            panic!("free")
        };
        let Acquired::Queued(gone) = t.acquire("web") else {
            panic!("held")
        };
        let Acquired::Queued(mut third) = t.acquire("web") else {
            panic!("held")
        };
        drop(gone);
        drop(first);
        let r = t.release(released.try_recv().expect("drop")).expect("held");
        assert!(r.handed_on);
        let _third = third.try_recv().expect("handed to the one still waiting");
        assert!(released.try_recv().is_err(), "the skipped permit is not reported again");
    }

    #[test]
    fn quiet_permits_never_queue_and_never_jump_the_queue() {
        let (mut t, mut released) = table();
        let quiet = t.try_acquire("web", Holder::Quiet).expect("free");
        assert_eq!(t.changing().count(), 0, "quiet work is not a change");
        let Acquired::Queued(mut change) = t.acquire("web") else {
            panic!("held by the reconciler")
        };
        drop(quiet);
        let r = t.release(released.try_recv().expect("drop")).expect("held");
        assert_eq!(r.was, Holder::Quiet);
        let change = change.try_recv().expect("the change runs next");
        assert_eq!(t.changing().collect::<Vec<_>>(), ["web"]);
        drop(change);
        t.release(released.try_recv().expect("drop"));
        assert!(t.is_empty());
    }

    #[test]
    fn shutting_down_refuses_the_queue() {
        let (mut t, _released) = table();
        let Acquired::Now(_held) = t.acquire("web") else {
            panic!("free")
        };
        let Acquired::Queued(mut waiting) = t.acquire("web") else {
            panic!("held")
        };
        t.refuse_waiting();
        assert!(matches!(waiting.try_recv(), Err(oneshot::error::TryRecvError::Closed)));
        assert!(!t.is_empty(), "the held permit runs to its end");
    }
}
