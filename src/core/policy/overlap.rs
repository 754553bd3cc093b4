//! The overlap policy: what happens when a firing falls due while an earlier run of
//! the same job has not ended. Owns the policy enum and a per-job state machine
//! ([`State`]) that a region supervisor holds and feeds with "due" and "finished"
//! events; it answers with [`Action`]s for the supervisor to carry out (start,
//! record skipped, hold, cancel). It must not start, cancel or record anything itself.
//!
//! The key is a *run* (one firing), not an attempt: a run stays running through its
//! retries and backoff waits, and the supervisor reports it finished only when the
//! run reaches a terminal state. Otherwise a buffered firing would slip in during a
//! backoff wait and overlap the retry.
//!
//! Semantics, per policy, when a firing falls due while runs are in flight:
//! - `allow`: start it (up to [`RUNNING_MAX`] concurrent runs; beyond, skip it).
//! - `skip`: record it skipped.
//! - `buffer_one`: hold it and start it when the running one ends. Only one is held:
//!   the *first* one is kept and later ones are skipped (as Temporal's `BUFFER_ONE`).
//!   Kept first because every decision is then final when taken: a later firing is
//!   recorded skipped once, at its due time, and the held one is never rewritten
//!   from "buffered" to "skipped"; runs also start in firing order. The cost is that
//!   the held run may be older than the newest firing; a job that wants "latest
//!   wins" asks for `cancel_previous`.
//! - `cancel_previous`: cancel the running ones and start the new firing once they
//!   have ended (as Temporal's `CANCEL_OTHER`), so two runs never overlap even
//!   briefly (the target sees at most one in flight). While the cancelled runs wind
//!   down, the new firing is held; a still newer firing replaces it (latest wins,
//!   which is the point of this policy) and the replaced one is recorded skipped.
//!   How long winding down takes is bounded by the per-attempt timeout.
//!
//! A manual trigger with `override_overlap` always starts, whatever the policy, and
//! neither cancels nor displaces anything. The only exception is the hard bound
//! [`RUNNING_MAX`], which even an override cannot pass.

use serde::{Deserialize, Serialize};

use crate::core::FieldError;

/// Most runs of one job in flight at once, whatever the policy (a memory bound on
/// [`State`] and a guard against a runaway `allow` job). Firings beyond it are
/// skipped with [`SkipReason::RunningMax`].
pub const RUNNING_MAX: usize = 1024;

/// What to do with a firing that falls due while an earlier run of the job is still
/// in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Run concurrently (up to [`RUNNING_MAX`]).
    Allow,
    /// Record the new firing skipped.
    #[default]
    Skip,
    /// Hold one firing and start it when the running one ends; skip further ones.
    BufferOne,
    /// Cancel the running one(s), then start the new firing.
    CancelPrevious,
}

impl Overlap {
    /// Always valid (every variant is); present so every policy validates alike.
    pub fn validate(&self) -> Result<(), FieldError> {
        Ok(())
    }

    /// The snake_case name used in JSON, the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Allow => "allow",
            Overlap::Skip => "skip",
            Overlap::BufferOne => "buffer_one",
            Overlap::CancelPrevious => "cancel_previous",
        }
    }
}

/// Why a firing was not started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// `skip`: a previous run is still in flight.
    Running,
    /// `buffer_one`: a previous run is in flight and a firing is already held.
    BufferFull,
    /// `cancel_previous`: a newer firing replaced this held one before it started.
    Superseded,
    /// [`RUNNING_MAX`] runs of this job are already in flight.
    RunningMax,
}

impl SkipReason {
    /// A short sentence for the run record's `reason`.
    pub fn describe(self) -> &'static str {
        match self {
            SkipReason::Running => "overlap policy skip: a previous run is still running",
            SkipReason::BufferFull => {
                "overlap policy buffer_one: a previous run is running and one firing is already buffered"
            }
            SkipReason::Superseded => {
                "overlap policy cancel_previous: replaced by a newer firing before it started"
            }
            SkipReason::RunningMax => "too many runs of this job in flight",
        }
    }
}

/// What the supervisor must do, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action<K> {
    /// Start this run now.
    Start(K),
    /// Record this firing `skipped`; it will not run.
    Skip { key: K, reason: SkipReason },
    /// Hold this firing; a later `Start` (or `Skip`) for it will follow.
    Buffer(K),
    /// Ask this running run to stop (its end is reported later through `on_finished`).
    Cancel(K),
    /// The held firing `K` will not run: record it `skipped` with this reason.
    SkipBuffered { key: K, reason: SkipReason },
}

/// The overlap state of one job: its runs in flight and the one firing held back.
///
/// Invariants (asserted as events arrive): no key appears twice; `cancelling` is a
/// subset of `running`; `running.len() <= RUNNING_MAX`; a held firing implies at
/// least one run in flight (otherwise it would have started).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State<K> {
    running: Vec<K>,
    /// Runs already asked to stop, so a cancel is sent once per run.
    cancelling: Vec<K>,
    buffered: Option<K>,
}

impl<K> Default for State<K> {
    fn default() -> Self {
        Self {
            running: Vec::new(),
            cancelling: Vec::new(),
            buffered: None,
        }
    }
}

impl<K: Clone + PartialEq> State<K> {
    /// No run in flight, nothing held.
    pub fn new() -> Self {
        Self::default()
    }

    /// The runs in flight, in start order.
    pub fn running(&self) -> &[K] {
        &self.running
    }

    /// The firing held back, if any.
    pub fn buffered(&self) -> Option<&K> {
        self.buffered.as_ref()
    }

    /// Whether this run has been asked to stop.
    pub fn is_cancelling(&self, key: &K) -> bool {
        self.cancelling.contains(key)
    }

    /// Nothing in flight and nothing held: the supervisor may drop this state.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.buffered.is_none()
    }

    /// A firing of the job fell due (scheduled or manual). `override_overlap` is set
    /// by a manual trigger that asks to bypass the policy.
    ///
    /// A key that is already running or held is a redelivery: nothing to do, the
    /// answer is empty.
    pub fn on_due(&mut self, policy: Overlap, key: K, override_overlap: bool) -> Vec<Action<K>> {
        let mut out = Vec::new();
        if self.running.contains(&key) || self.buffered.as_ref() == Some(&key) {
            return out;
        }
        // A held firing goes before a newer one (only reachable when the policy was
        // changed to `allow` while one was held).
        self.drain(policy, &mut out);

        if self.running.len() >= RUNNING_MAX {
            out.push(Action::Skip {
                key,
                reason: SkipReason::RunningMax,
            });
        } else if override_overlap || self.running.is_empty() || policy == Overlap::Allow {
            self.start(key, &mut out);
        } else {
            match policy {
                Overlap::Allow => unreachable!("allow starts above"),
                Overlap::Skip => out.push(Action::Skip {
                    key,
                    reason: SkipReason::Running,
                }),
                Overlap::BufferOne => {
                    if self.buffered.is_some() {
                        out.push(Action::Skip {
                            key,
                            reason: SkipReason::BufferFull,
                        });
                    } else {
                        self.buffered = Some(key.clone());
                        out.push(Action::Buffer(key));
                    }
                }
                Overlap::CancelPrevious => {
                    for running in &self.running {
                        if !self.cancelling.contains(running) {
                            self.cancelling.push(running.clone());
                            out.push(Action::Cancel(running.clone()));
                        }
                    }
                    if let Some(old) = self.buffered.replace(key.clone()) {
                        out.push(Action::SkipBuffered {
                            key: old,
                            reason: SkipReason::Superseded,
                        });
                    }
                    out.push(Action::Buffer(key));
                }
            }
        }
        self.check();
        out
    }

    /// A run reached a terminal state (succeeded, failed, dead-lettered, cancelled,
    /// lost for good). Unknown keys are ignored (a duplicate report).
    ///
    /// If `key` is the held firing, it ended before it started (for instance a user
    /// cancelled it): it is dropped from the hold and nothing starts in its place.
    pub fn on_finished(&mut self, policy: Overlap, key: &K) -> Vec<Action<K>> {
        let mut out = Vec::new();
        if let Some(i) = self.running.iter().position(|k| k == key) {
            self.running.remove(i);
            self.cancelling.retain(|k| k != key);
        } else if self.buffered.as_ref() == Some(key) {
            self.buffered = None;
        }
        self.drain(policy, &mut out);
        self.check();
        out
    }

    /// Start the held firing if the policy now lets it: when nothing runs, or under
    /// `allow` (policy changed) while below the bound.
    fn drain(&mut self, policy: Overlap, out: &mut Vec<Action<K>>) {
        let may_start = self.running.is_empty()
            || (policy == Overlap::Allow && self.running.len() < RUNNING_MAX);
        if may_start && let Some(key) = self.buffered.take() {
            self.start(key, out);
        }
    }

    fn start(&mut self, key: K, out: &mut Vec<Action<K>>) {
        // O(n) rather than a full pairwise check in `check`: keys enter only here
        // and through the hold, both guarded by `on_due`'s redelivery test.
        debug_assert!(!self.running.contains(&key), "overlap: duplicate key");
        self.running.push(key.clone());
        out.push(Action::Start(key));
    }

    /// Assert the invariants (programmer errors: a broken one crashes the actor).
    fn check(&self) {
        assert!(
            self.running.len() <= RUNNING_MAX,
            "overlap: running over bound"
        );
        assert!(
            self.buffered.is_none() || !self.running.is_empty(),
            "overlap: a held firing with nothing running"
        );
        assert!(
            self.cancelling.iter().all(|k| self.running.contains(k)),
            "overlap: cancelling a run that is not running"
        );
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    use Action::{Buffer, Cancel, Skip as SkipA, SkipBuffered, Start};
    use Overlap::{Allow, BufferOne, CancelPrevious, Skip};

    /// One step of a scenario: a firing falls due (with override) or a run ends.
    #[derive(Clone, Copy, Debug)]
    enum Ev {
        Due(u32),
        DueOverride(u32),
        Done(u32),
    }
    use Ev::{Done, Due, DueOverride};

    fn run(policy: Overlap, events: &[Ev]) -> (State<u32>, Vec<Vec<Action<u32>>>) {
        let mut s = State::new();
        let outs = events
            .iter()
            .map(|e| match *e {
                Due(k) => s.on_due(policy, k, false),
                DueOverride(k) => s.on_due(policy, k, true),
                Done(k) => s.on_finished(policy, &k),
            })
            .collect();
        (s, outs)
    }

    fn skip(key: u32, reason: SkipReason) -> Action<u32> {
        SkipA { key, reason }
    }

    /// (name, policy, events, the actions answered to each event)
    type Case = (&'static str, Overlap, Vec<Ev>, Vec<Vec<Action<u32>>>);

    #[test]
    fn table() {
        use SkipReason::*;
        let cases: Vec<Case> = vec![
            ("idle starts", Skip, vec![Due(1)], vec![vec![Start(1)]]),
            (
                "skip while running",
                Skip,
                vec![Due(1), Due(2), Done(1), Due(3)],
                vec![
                    vec![Start(1)],
                    vec![skip(2, Running)],
                    vec![],
                    vec![Start(3)],
                ],
            ),
            (
                "allow runs concurrently",
                Allow,
                vec![Due(1), Due(2), Done(1), Due(3)],
                vec![vec![Start(1)], vec![Start(2)], vec![], vec![Start(3)]],
            ),
            (
                "buffer_one keeps the first held",
                BufferOne,
                vec![Due(1), Due(2), Due(3), Done(1), Done(2)],
                vec![
                    vec![Start(1)],
                    vec![Buffer(2)],
                    vec![skip(3, BufferFull)],
                    vec![Start(2)],
                    vec![],
                ],
            ),
            (
                "cancel_previous cancels then starts after the end",
                CancelPrevious,
                vec![Due(1), Due(2), Done(1), Done(2)],
                vec![
                    vec![Start(1)],
                    vec![Cancel(1), Buffer(2)],
                    vec![Start(2)],
                    vec![],
                ],
            ),
            (
                "cancel_previous: newest held firing wins, cancel sent once",
                CancelPrevious,
                vec![Due(1), Due(2), Due(3), Done(1)],
                vec![
                    vec![Start(1)],
                    vec![Cancel(1), Buffer(2)],
                    vec![
                        SkipBuffered {
                            key: 2,
                            reason: Superseded,
                        },
                        Buffer(3),
                    ],
                    vec![Start(3)],
                ],
            ),
            (
                "override starts under skip",
                Skip,
                vec![Due(1), DueOverride(2), Due(3)],
                vec![vec![Start(1)], vec![Start(2)], vec![skip(3, Running)]],
            ),
            (
                "override under cancel_previous neither cancels nor displaces",
                CancelPrevious,
                vec![Due(1), Due(2), DueOverride(3), Done(1)],
                vec![
                    vec![Start(1)],
                    vec![Cancel(1), Buffer(2)],
                    vec![Start(3)],
                    vec![],
                ],
            ),
            (
                "held firing waits for every run, override included",
                BufferOne,
                vec![Due(1), DueOverride(2), Due(3), Done(1), Done(2)],
                vec![
                    vec![Start(1)],
                    vec![Start(2)],
                    vec![Buffer(3)],
                    vec![],
                    vec![Start(3)],
                ],
            ),
            (
                "redelivery of a running or held key is a no-op",
                BufferOne,
                vec![Due(1), Due(1), Due(2), Due(2), DueOverride(1)],
                vec![vec![Start(1)], vec![], vec![Buffer(2)], vec![], vec![]],
            ),
            (
                "unknown finish is a no-op",
                Skip,
                vec![Done(9), Due(1), Done(9)],
                vec![vec![], vec![Start(1)], vec![]],
            ),
            (
                "held firing finished before start is dropped",
                BufferOne,
                vec![Due(1), Due(2), Done(2), Done(1), Due(3)],
                vec![
                    vec![Start(1)],
                    vec![Buffer(2)],
                    vec![],
                    vec![],
                    vec![Start(3)],
                ],
            ),
        ];
        for (name, policy, events, expected) in cases {
            let (_, got) = run(policy, &events);
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn policy_change_to_allow_releases_the_held_firing() {
        let mut s = State::new();
        assert_eq!(s.on_due(BufferOne, 1, false), vec![Start(1)]);
        assert_eq!(s.on_due(BufferOne, 2, false), vec![Buffer(2)]);
        // The held firing starts before the new one, in firing order.
        assert_eq!(s.on_due(Allow, 3, false), vec![Start(2), Start(3)]);
        assert_eq!(s.running(), &[1, 2, 3]);
        assert!(s.buffered().is_none());
    }

    #[test]
    fn policy_change_to_skip_still_starts_the_held_firing_when_idle() {
        let mut s = State::new();
        s.on_due(BufferOne, 1, false);
        s.on_due(BufferOne, 2, false);
        assert_eq!(s.on_due(Skip, 3, false), vec![skip(3, SkipReason::Running)]);
        assert_eq!(s.on_finished(Skip, &1), vec![Start(2)]);
    }

    #[test]
    fn running_max_bounds_allow_and_override() {
        let mut s = State::new();
        for k in 0..RUNNING_MAX as u32 {
            assert_eq!(s.on_due(Allow, k, false), vec![Start(k)]);
        }
        let k = RUNNING_MAX as u32;
        assert_eq!(
            s.on_due(Allow, k, false),
            vec![skip(k, SkipReason::RunningMax)]
        );
        assert_eq!(
            s.on_due(Allow, k + 1, true),
            vec![skip(k + 1, SkipReason::RunningMax)]
        );
        s.on_finished(Allow, &0);
        assert_eq!(s.on_due(Allow, k + 2, false), vec![Start(k + 2)]);
        assert_eq!(s.running().len(), RUNNING_MAX);
    }

    #[test]
    fn cancelling_is_tracked_and_cleared() {
        let mut s = State::new();
        s.on_due(CancelPrevious, 1, false);
        s.on_due(CancelPrevious, 2, false);
        assert!(s.is_cancelling(&1));
        s.on_finished(CancelPrevious, &1);
        assert!(!s.is_cancelling(&1));
        assert_eq!(s.running(), &[2]);
        s.on_finished(CancelPrevious, &2);
        assert!(s.is_idle());
    }

    #[test]
    fn state_round_trips_through_serde() {
        let mut s = State::new();
        s.on_due(CancelPrevious, 1u32, false);
        s.on_due(CancelPrevious, 2, false);
        let json = serde_json::to_string(&s).unwrap();
        let back: State<u32> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn overlap_names() {
        for p in [Allow, Skip, BufferOne, CancelPrevious] {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
            assert_eq!(serde_json::from_str::<Overlap>(&json).unwrap(), p);
        }
        assert!(serde_json::from_str::<Overlap>("\"replace\"").is_err());
    }

    fn policy_strategy() -> impl Strategy<Value = Overlap> {
        prop_oneof![
            Just(Allow),
            Just(Skip),
            Just(BufferOne),
            Just(CancelPrevious)
        ]
    }

    /// Random scenarios: fresh keys fall due (sometimes with override), random
    /// earlier keys (running, held, or unknown) finish.
    fn events_strategy() -> impl Strategy<Value = Vec<(u8, bool, u8)>> {
        proptest::collection::vec((0u8..3, any::<bool>(), any::<u8>()), 0..80)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn invariants_hold(policy in policy_strategy(), events in events_strategy()) {
            let mut s = State::<u32>::new();
            let mut next = 0u32;
            let mut started = Vec::new();
            let mut ended_unstarted = 0usize;
            let mut held_dropped = 0usize;
            let mut dues = 0usize;
            let mut overridden_running = Vec::new();
            for (kind, ovr, pick) in events {
                let out = if kind < 2 {
                    next += 1;
                    dues += 1;
                    let ovr = ovr && kind == 1;
                    if ovr && !s.running().is_empty() {
                        overridden_running.push(next);
                    }
                    s.on_due(policy, next, ovr)
                } else {
                    let key = u32::from(pick) % (next + 2);
                    overridden_running.retain(|k| *k != key);
                    if s.buffered() == Some(&key) {
                        held_dropped += 1;
                    }
                    s.on_finished(policy, &key)
                };
                for a in &out {
                    match a {
                        Start(k) => started.push(*k),
                        SkipA { .. } | SkipBuffered { .. } => ended_unstarted += 1,
                        Buffer(_) | Cancel(_) => {}
                    }
                }
                // No run starts twice.
                let mut sorted = started.clone();
                sorted.sort_unstable();
                sorted.dedup();
                prop_assert_eq!(sorted.len(), started.len());
                prop_assert!(s.buffered().is_none() || !s.running().is_empty());
                prop_assert!(s.running().len() <= RUNNING_MAX);
                if policy != Allow {
                    // Without overrides, at most one run is in flight.
                    let scheduled = s
                        .running()
                        .iter()
                        .filter(|k| !overridden_running.contains(k))
                        .count();
                    prop_assert!(scheduled <= 1, "{:?}", s);
                }
                if policy == Allow {
                    prop_assert!(s.buffered().is_none());
                }
            }
            // Nothing silently lost: every firing that fell due started, was skipped,
            // is still held, or was reported ended while held.
            prop_assert_eq!(
                dues,
                started.len() + ended_unstarted + usize::from(s.buffered().is_some()) + held_dropped
            );
        }
    }
}
