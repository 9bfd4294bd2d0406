//! Learning-rate schedules as plain functions of the step.

use serde::{Deserialize, Serialize};

/// Linear warm-up from 0 to the peak, then cosine decay to `final_fraction` of the peak.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WarmupCosine {
    /// Steps of linear warm-up.
    pub warmup_steps: usize,
    /// All steps of the phase, warm-up included.
    pub total_steps: usize,
    /// Where the cosine ends, as a fraction of the peak.
    pub final_fraction: f64,
}

impl WarmupCosine {
    /// Warm-up over 5% of the steps (at least one), decay to 1% of the peak.
    pub fn for_steps(total_steps: usize) -> Self {
        Self {
            warmup_steps: (total_steps / 20).max(1).min(total_steps),
            total_steps,
            final_fraction: 0.01,
        }
    }

    /// The multiplier of the peak rate at `step` (0-based), in `[0, 1]`.
    pub fn factor(&self, step: usize) -> f64 {
        if self.total_steps == 0 {
            return 0.0;
        }
        let step = step.min(self.total_steps - 1);
        if step < self.warmup_steps {
            return (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = (self.total_steps - self.warmup_steps).max(1);
        let progress = (step - self.warmup_steps) as f64 / decay_steps as f64;
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.final_fraction + (1.0 - self.final_fraction) * cosine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_linearly_then_decays_by_cosine() {
        let schedule = WarmupCosine {
            warmup_steps: 4,
            total_steps: 104,
            final_fraction: 0.0,
        };
        assert_eq!(schedule.factor(0), 0.25);
        assert_eq!(schedule.factor(3), 1.0);
        assert_eq!(schedule.factor(4), 1.0, "the decay starts at the peak");
        assert!(
            (schedule.factor(54) - 0.5).abs() < 1e-12,
            "half-way down at the middle of the decay"
        );
        assert!(schedule.factor(103) < 0.001);
        assert!(
            (4..103).all(|s| schedule.factor(s + 1) <= schedule.factor(s)),
            "monotone decay"
        );
        assert_eq!(
            schedule.factor(1000),
            schedule.factor(103),
            "steps past the end stay at the end"
        );
    }

    #[test]
    fn defaults_are_sane_for_tiny_and_large_runs() {
        let tiny = WarmupCosine::for_steps(1);
        assert_eq!(tiny.factor(0), 1.0);
        let large = WarmupCosine::for_steps(1000);
        assert_eq!(large.warmup_steps, 50);
        assert!((large.factor(999) - 0.01).abs() < 1e-3);
        assert_eq!(WarmupCosine::for_steps(0).factor(0), 0.0);
    }
}
