//! The patch embedding both image families start with: timm's `patch_embed.proj`, a conv with
//! stride = kernel = patch, computed as one matmul over non-overlapping patches (the same
//! function, without an im2col pass).

use burn::module::Param;
use burn::tensor::{Device, Tensor};

use super::weights::{param, to_vec, transpose, Init, TensorSink, WeightSource};

/// `patch_embed.proj` (a conv `[dim, chans, p, p]` with stride p), read as the matrix
/// `[chans·p·p, dim]` and its bias. The conv keeps torch's default init in timm (its init only
/// touches `nn.Linear`).
pub fn patch_conv(
    src: &mut dyn WeightSource,
    c: usize,
    p: usize,
    d: usize,
    device: &Device,
) -> (Param<Tensor<2>>, Param<Tensor<1>>) {
    let k = c * p * p;
    let w = src.tensor(
        "patch_embed.proj.weight",
        &[d, c, p, p],
        Init::torch_default(k),
    );
    let b = src.tensor("patch_embed.proj.bias", &[d], Init::torch_default(k));
    (
        param(transpose(&w, d, k), [k, d], device),
        param(b, [d], device),
    )
}

/// The patch conv: `[batch, chans, h, w]` → `[batch, gh·gw, dim]`, patches row-major.
pub fn patch_conv_forward(
    x: Tensor<4>,
    weight: &Param<Tensor<2>>,
    bias: &Param<Tensor<1>>,
    p: usize,
    [gh, gw]: [usize; 2],
) -> Tensor<3> {
    let [b, c, h, w] = x.dims();
    // A strided conv ignores the pixels past the last whole patch; so do we.
    let x = if h != gh * p || w != gw * p {
        x.slice([0..b, 0..c, 0..gh * p, 0..gw * p])
    } else {
        x
    };
    // [b, c, gh, p, gw, p] → [b, gh, gw, c, p, p] → [b, patches, c*p*p]
    let patches = x
        .reshape([b, c, gh, p, gw, p])
        .permute([0, 2, 4, 1, 3, 5])
        .reshape([b, gh * gw, c * p * p]);
    // Through our linear: f32-exact on GPUs (burn's own matmul runs TF32 there) and bf16
    // under autocast, as torch.autocast runs the conv.
    crate::ops::linear(patches, weight.val(), Some(bias.val()))
}

/// Writes the patch conv back in torch's `[dim, chans, p, p]` layout.
pub fn export_patch_conv(
    weight: &Param<Tensor<2>>,
    bias: &Param<Tensor<1>>,
    p: usize,
    out: &mut TensorSink,
) {
    let [k, d] = weight.dims();
    let c = k / (p * p);
    let w = to_vec(weight.val());
    out.push_raw(
        "patch_embed.proj.weight",
        vec![d, c, p, p],
        transpose(&w, k, d),
    );
    out.push("patch_embed.proj.bias", bias.val());
}
