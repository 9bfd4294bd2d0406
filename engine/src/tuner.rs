//! Choosing between two ways of doing the same work by measuring them on this machine: whether a
//! second core speeds a step up depends on the machine (on a 2-vCPU virtual machine two workers can
//! slow each other down more than the second one saves). Used for the 1x1 convolutions' weight
//! gradients on the helpers (`model::cpu_train`) and for a step's second part on the replica
//! (`peer`). Only the speed depends on the choice, never the numbers.

/// The first way (`false`) or the second (`true`) for the next run of some work: a run each way
/// warms up (the first allocates, the first on another core its messages' buffers), a run each way
/// is measured, then the faster on average (a moving mean of the seconds) is kept and the other tried
/// again every [`Tuner::RETRY_EVERY`] runs, in case the machine changed its mind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tuner {
    /// Mean seconds of a run the first way, and the second.
    pub seconds: [Option<f64>; 2],
    runs: u64,
}

impl Tuner {
    pub const RETRY_EVERY: u64 = 16;

    /// Whether the next run goes the second way.
    pub fn second_next(&self) -> bool {
        match self.seconds {
            // First, second, first, second.
            _ if self.runs < 4 => self.runs % 2 == 1,
            [Some(first), Some(second)] => (second < first) != self.runs.is_multiple_of(Self::RETRY_EVERY),
            _ => false,
        }
    }

    /// A run took `seconds`, the second way or the first.
    pub fn record(&mut self, second: bool, seconds: f64) {
        if self.runs >= 2 {
            let mean = &mut self.seconds[usize::from(second)];
            *mean = Some(mean.map_or(seconds, |mean| 0.7 * mean + 0.3 * seconds));
        }
        self.runs += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::Tuner;

    /// Runs `tuner` for `runs` runs where the first way takes `first` seconds and the second
    /// `second`; the ways it took.
    fn drive(tuner: &mut Tuner, runs: usize, first: f64, second: f64) -> Vec<bool> {
        (0..runs)
            .map(|_| {
                let way = tuner.second_next();
                tuner.record(way, if way { second } else { first });
                way
            })
            .collect()
    }

    #[test]
    fn tries_each_way_twice_then_keeps_the_faster_and_retries_the_other() {
        let mut tuner = Tuner::default();
        let ways = drive(&mut tuner, 40, 2.0, 1.0);
        assert_eq!(ways[..4], [false, true, false, true], "warm-up and measurement");
        // The second way is faster: kept, except one retry of the first every 16 runs.
        let firsts: Vec<usize> = (4..40).filter(|&run| !ways[run]).collect();
        assert_eq!(firsts, [16, 32]);
        assert_eq!(tuner.seconds, [Some(2.0), Some(1.0)]);

        let mut tuner = Tuner::default();
        let ways = drive(&mut tuner, 40, 1.0, 2.0);
        let seconds: Vec<usize> = (4..40).filter(|&run| ways[run]).collect();
        assert_eq!(seconds, [16, 32], "the first way faster: the second only retried");
    }

    #[test]
    fn follows_a_machine_that_changes() {
        let mut tuner = Tuner::default();
        drive(&mut tuner, 20, 1.0, 2.0);
        // The first way slows down (another tab took the core): the retries see the second win.
        let ways = drive(&mut tuner, 60, 5.0, 2.0);
        assert!(ways[50..].iter().all(|&second| second), "{ways:?}");
    }
}
