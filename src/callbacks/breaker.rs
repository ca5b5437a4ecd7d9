//! Circuit breakers, one per endpoint: an endpoint that keeps failing is
//! backed off as a whole (its due callbacks wait without spending their
//! retries), then probed with one callback; the first answer closes it and
//! its backlog flows again by itself.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// Consecutive failures (no answer, 5xx, 429) that open the circuit.
    pub failures: u32,
    /// First pause while open; doubles after each failed probe...
    pub open_for: Duration,
    /// ...up to this.
    pub max_open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures: 5,
            open_for: Duration::from_millis(500),
            max_open_for: Duration::from_secs(10),
        }
    }
}

/// Whether the endpoint showed it is up (it answered, whatever it said
/// about this one callback) or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Failing, but not yet `failures` times in a row.
    Failing(u32),
    /// No attempts until `until`; then one probe.
    Open { until: Instant, open_for: Duration },
    /// The probe is under way.
    Probing { open_for: Duration },
}

/// Breakers of the endpoints that are failing; a healthy endpoint has none,
/// so the map stays as small as the set of failing endpoints.
pub struct Breakers {
    settings: BreakerSettings,
    states: HashMap<String, State>,
}

impl Breakers {
    pub fn new(settings: BreakerSettings) -> Breakers {
        Breakers {
            settings,
            states: HashMap::new(),
        }
    }

    /// How many callbacks of `endpoint` may start now, when the breaker
    /// limits it: 0 while open or probing, 1 (the probe) once open long
    /// enough. None: no limit from the breaker.
    pub fn budget(&self, endpoint: &str, now: Instant) -> Option<u32> {
        match self.states.get(endpoint)? {
            State::Failing(_) => None,
            State::Open { until, .. } => Some(u32::from(*until <= now)),
            State::Probing { .. } => Some(0),
        }
    }

    /// Endpoints the breaker limits, with [`Breakers::budget`].
    pub fn limits(&self, now: Instant) -> impl Iterator<Item = (&str, u32)> {
        self.states
            .keys()
            .filter_map(move |e| Some((e.as_str(), self.budget(e, now)?)))
    }

    /// A callback of `endpoint` starts: past an open period, it is the probe.
    pub fn started(&mut self, endpoint: &str, now: Instant) {
        if let Some(s) = self.states.get_mut(endpoint)
            && let State::Open { until, open_for } = *s
            && until <= now
        {
            *s = State::Probing { open_for };
        }
    }

    /// A callback of `endpoint` ended; answers whether the circuit opened.
    pub fn finished(&mut self, endpoint: &str, health: Health, now: Instant) -> bool {
        if health == Health::Up {
            self.states.remove(endpoint);
            return false;
        }
        let settings = self.settings;
        let state = self
            .states
            .entry(endpoint.to_string())
            .or_insert(State::Failing(0));
        let open = |open_for: Duration| State::Open {
            until: now + open_for,
            open_for,
        };
        match *state {
            State::Failing(n) if n + 1 >= settings.failures => {
                *state = open(settings.open_for);
                true
            }
            State::Failing(n) => {
                *state = State::Failing(n + 1);
                false
            }
            State::Probing { open_for } => {
                *state = open((open_for * 2).min(settings.max_open_for));
                true
            }
            // Attempts that started before the circuit opened.
            State::Open { .. } => false,
        }
    }

    /// Endpoints backed off now (open or probing).
    pub fn open_count(&self) -> usize {
        self.states
            .values()
            .filter(|s| !matches!(s, State::Failing(_)))
            .count()
    }

    /// The next moment an open circuit lets a probe through.
    pub fn next_probe(&self, now: Instant) -> Option<Instant> {
        self.states
            .values()
            .filter_map(|s| match s {
                State::Open { until, .. } if *until > now => Some(*until),
                _ => None,
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers() -> Breakers {
        Breakers::new(BreakerSettings {
            failures: 3,
            open_for: Duration::from_secs(1),
            max_open_for: Duration::from_secs(3),
        })
    }

    #[test]
    fn opens_after_consecutive_failures_and_an_answer_resets_the_count() {
        let (mut b, t) = (breakers(), Instant::now());
        assert!(!b.finished("e", Health::Down, t));
        assert!(!b.finished("e", Health::Down, t));
        assert!(!b.finished("e", Health::Up, t), "an answer resets");
        assert_eq!(b.budget("e", t), None);
        b.finished("e", Health::Down, t);
        b.finished("e", Health::Down, t);
        assert!(b.finished("e", Health::Down, t), "third in a row opens");
        assert_eq!(b.budget("e", t), Some(0));
        assert_eq!(
            b.budget("other", t),
            None,
            "other endpoints are not affected"
        );
        assert_eq!(b.open_count(), 1);
        assert_eq!(b.next_probe(t), Some(t + Duration::from_secs(1)));
    }

    #[test]
    fn one_probe_after_the_pause_then_closed_or_open_longer() {
        let (mut b, t) = (breakers(), Instant::now());
        for _ in 0..3 {
            b.finished("e", Health::Down, t);
        }
        let later = t + Duration::from_secs(1);
        assert_eq!(b.budget("e", later), Some(1), "one probe");
        b.started("e", later);
        assert_eq!(b.budget("e", later), Some(0), "only one");
        assert!(b.finished("e", Health::Down, later));
        assert_eq!(b.next_probe(later), Some(later + Duration::from_secs(2)));
        let much_later = later + Duration::from_secs(2);
        b.started("e", much_later);
        b.finished("e", Health::Down, much_later);
        assert_eq!(
            b.next_probe(much_later),
            Some(much_later + Duration::from_secs(3)),
            "the pause is capped"
        );
        let end = much_later + Duration::from_secs(3);
        b.started("e", end);
        assert!(!b.finished("e", Health::Up, end));
        assert_eq!((b.budget("e", end), b.open_count()), (None, 0));
    }
}
