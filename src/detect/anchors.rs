//! torchvision's `AnchorGenerator` as RetinaNet configures it (`_default_anchorgen`): per
//! level three scales (x, x·2^⅓, x·2^⅔, truncated to integers) times the aspect ratios,
//! centred on every cell of the level's grid, the cell's stride being the input's size
//! integer-divided by the grid's. All in f32, rounded as torch rounds (half to even).

/// The anchor sizes torchvision derives from one level's base size.
pub fn level_scales(base: f32) -> [f32; 3] {
    // Python's int() of the double product, as `_default_anchorgen` computes it.
    let scale = |p: f64| (base as f64 * 2f64.powf(p)).trunc() as f32;
    [base, scale(1.0 / 3.0), scale(2.0 / 3.0)]
}

/// `generate_anchors`: the anchors of one cell centred on 0, ratio-major, `(x1, y1, x2, y2)`.
pub fn cell_anchors(scales: &[f32], ratios: &[f32]) -> Vec<[f32; 4]> {
    let mut out = Vec::with_capacity(scales.len() * ratios.len());
    for &r in ratios {
        let h_ratio = r.sqrt();
        let w_ratio = 1.0 / h_ratio;
        for &s in scales {
            let (ws, hs) = (w_ratio * s, h_ratio * s);
            out.push([-ws, -hs, ws, hs].map(|v| (v / 2.0).round_ties_even()));
        }
    }
    out
}

/// Every anchor of an input of `image` (h, w) whose levels have grids `grids` (h, w), level
/// after level, each level row-major over its cells with the cell's anchors innermost: the
/// order of a RetinaNet head's outputs.
pub fn grid_anchors(
    image: [usize; 2],
    grids: &[[usize; 2]],
    sizes: &[f32],
    ratios: &[f32],
) -> Vec<[f32; 4]> {
    let mut out = Vec::new();
    for (&[gh, gw], &base) in grids.iter().zip(sizes) {
        let cell = cell_anchors(&level_scales(base), ratios);
        let (sh, sw) = (image[0] / gh.max(1), image[1] / gw.max(1));
        for y in 0..gh {
            for x in 0..gw {
                let (dx, dy) = ((x * sw) as f32, (y * sh) as f32);
                out.extend(
                    cell.iter()
                        .map(|a| [a[0] + dx, a[1] + dy, a[2] + dx, a[3] + dy]),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_default_cell_anchors() {
        // torchvision: AnchorGenerator(((32, 40, 50),), ((0.5, 1.0, 2.0),)).cell_anchors[0]
        let want = [
            [-23., -11., 23., 11.],
            [-28., -14., 28., 14.],
            [-35., -18., 35., 18.],
            [-16., -16., 16., 16.],
            [-20., -20., 20., 20.],
            [-25., -25., 25., 25.],
            [-11., -23., 11., 23.],
            [-14., -28., 14., 28.],
            [-18., -35., 18., 35.],
        ];
        assert_eq!(level_scales(32.0), [32.0, 40.0, 50.0]);
        assert_eq!(cell_anchors(&level_scales(32.0), &[0.5, 1.0, 2.0]), want);
    }
}
