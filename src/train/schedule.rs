//! Learning rate per step: linear warmup from `warmup_lr` to `lr`, then cosine to `min_lr`
//! (timm's CosineLRScheduler, stepped per update instead of per epoch), or polynomial decay
//! (mmsegmentation's `PolyLR`, power 1 by default in its configs).

/// How the learning rate falls after the warmup (`train --sched`).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    #[default]
    Cosine,
    /// `min_lr + (lr − min_lr)·(1 − t)^power`.
    Poly(f64),
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Schedule {
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    #[serde(default)]
    pub decay: Decay,
}

impl Schedule {
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            let t = (step + 1) as f64 / self.warmup_steps as f64;
            return self.warmup_lr + (self.lr - self.warmup_lr) * t;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let t = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        let fall = match self.decay {
            Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
            Decay::Poly(power) => (1.0 - t).powf(power),
        };
        self.min_lr + (self.lr - self.min_lr) * fall
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = Schedule {
            lr: 1e-3,
            min_lr: 1e-5,
            warmup_lr: 1e-6,
            warmup_steps: 10,
            total_steps: 110,
            decay: Decay::Cosine,
        };
        assert!(s.lr_at(0) < 2e-4);
        assert!((s.lr_at(9) - 1e-3).abs() < 1e-12);
        assert!((s.lr_at(10) - 1e-3).abs() < 1e-12);
        assert!((s.lr_at(60) - (1e-5 + 0.5 * (1e-3 - 1e-5))).abs() < 1e-9);
        assert!((s.lr_at(110) - 1e-5).abs() < 1e-12);
        assert!(s.lr_at(30) > s.lr_at(31));
    }

    #[test]
    fn warmup_then_poly() {
        let s = Schedule {
            lr: 1e-3,
            min_lr: 0.0,
            warmup_lr: 1e-6,
            warmup_steps: 10,
            total_steps: 110,
            decay: Decay::Poly(1.0),
        };
        assert!((s.lr_at(10) - 1e-3).abs() < 1e-12);
        assert!((s.lr_at(60) - 0.5e-3).abs() < 1e-12);
        assert!((s.lr_at(85) - 0.25e-3).abs() < 1e-12);
        assert_eq!(s.lr_at(110), 0.0);
    }
}
