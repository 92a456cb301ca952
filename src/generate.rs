//! Text generation with a KV cache: the prompt is run once, then one token at a time, each
//! drawn from the last logits (greedy, or temperature with nucleus sampling).

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::llama::Logits;
use crate::model::weights::to_vec;
use crate::network::LanguageModel;

/// How the next token is chosen.
#[derive(Clone, Debug)]
pub struct Sampling {
    /// 0 picks the most likely token (greedy).
    pub temperature: f64,
    /// Keep the smallest set of tokens whose probabilities reach `top_p`.
    pub top_p: f64,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// Generates up to `max_new` tokens after `prompt`, calling `on_token` with each; stops early
/// at any of `stop` ids or when `on_token` returns false. Returns the new ids.
pub fn generate(
    model: &LanguageModel,
    prompt: &[u32],
    max_new: usize,
    sampling: &Sampling,
    stop: &[u32],
    device: &Device,
    mut on_token: impl FnMut(u32) -> bool,
) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(sampling.seed);
    let mut cache = model.new_cache();
    let ids = |v: &[u32]| {
        let data: Vec<i64> = v.iter().map(|&i| i as i64).collect();
        Tensor::<2, Int>::from_data(TensorData::new(data, [1, v.len()]), device)
    };
    let mut out = Vec::new();
    let mut next_input: Vec<u32> = prompt.to_vec();
    for _ in 0..max_new {
        if next_input.is_empty() {
            break;
        }
        let logits = model.forward_logits(ids(&next_input), Some(&mut cache), Logits::Last);
        let [_, t, v] = logits.dims();
        let last = to_vec(logits.slice([0..1, t - 1..t, 0..v]));
        let id = pick(&last, sampling, &mut rng);
        out.push(id);
        if stop.contains(&id) || !on_token(id) {
            break;
        }
        next_input = vec![id];
    }
    out
}

/// One draw from `logits` under `sampling`.
pub fn pick(logits: &[f32], sampling: &Sampling, rng: &mut StdRng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
                if x > best.1 {
                    (i, x)
                } else {
                    best
                }
            })
            .0 as u32
    };
    if sampling.temperature <= 0.0 {
        return argmax();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &x)| (i, ((x as f64 - max) / sampling.temperature).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut kept = 0.0;
    let mut n = 0;
    for p in &probs {
        kept += p.1 / total;
        n += 1;
        if kept >= sampling.top_p {
            break;
        }
    }
    let probs = &probs[..n.max(1)];
    let mass: f64 = probs.iter().map(|p| p.1).sum();
    let mut r = rng.random_range(0.0..mass);
    for &(i, p) in probs {
        if r < p {
            return i as u32;
        }
        r -= p;
    }
    probs[probs.len() - 1].0 as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest_and_top_p_keeps_the_nucleus() {
        let logits = [0.0, 3.0, 1.0, 2.9];
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(pick(&logits, &Sampling::default(), &mut rng), 1);
        // A tiny top_p leaves only the most likely token, whatever the temperature.
        let s = Sampling {
            temperature: 5.0,
            top_p: 1e-6,
            seed: 0,
        };
        for _ in 0..20 {
            assert_eq!(pick(&logits, &s, &mut rng), 1);
        }
        // With everything kept and a high temperature every token turns up.
        let s = Sampling {
            temperature: 100.0,
            top_p: 1.0,
            seed: 0,
        };
        let mut seen = [false; 4];
        for _ in 0..400 {
            seen[pick(&logits, &s, &mut rng) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
