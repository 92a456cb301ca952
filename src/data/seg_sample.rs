//! One segmentation sample (an image and a class index per pixel) and what every source and
//! the training pipeline do to one: resize it, adapt its channels.

/// The label that no loss and no metric counts (mmsegmentation's default).
pub const IGNORE_INDEX: u8 = 255;

/// One sample: 8-bit pixels `[c, h, w]` and a class index per pixel `[h, w]`.
#[derive(Clone, Debug, PartialEq)]
pub struct SegSample {
    pub pixels: Vec<u8>,
    pub shape: [usize; 3],
    pub mask: Vec<u8>,
}

/// A sample brought to `size`: the image bilinearly, the mask by nearest neighbour.
pub fn resize_sample(s: SegSample, [oh, ow]: [usize; 2]) -> SegSample {
    let [c, h, w] = s.shape;
    if [h, w] == [oh, ow] {
        return s;
    }
    let pixels = resize_pixels(&s.pixels, [c, h, w], [oh, ow]);
    let mask = (0..oh * ow)
        .map(|i| {
            let (y, x) = (i / ow, i % ow);
            s.mask[(y * h / oh) * w + x * w / ow]
        })
        .collect();
    SegSample {
        pixels,
        shape: [c, oh, ow],
        mask,
    }
}

/// 8-bit planes `[c, h, w]` resized bilinearly to `[oh, ow]`.
pub fn resize_pixels(pixels: &[u8], [c, h, w]: [usize; 3], [oh, ow]: [usize; 2]) -> Vec<u8> {
    if [h, w] == [oh, ow] {
        return pixels.to_vec();
    }
    let x: Vec<f32> = pixels.iter().map(|&p| p as f32).collect();
    super::transform::resize(&x, c, h, w, oh, ow, false)
        .into_iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect()
}

/// A sample with `chans` channels: RGB averaged to grey, grey repeated to RGB.
pub fn adapt_channels(s: SegSample, chans: usize) -> SegSample {
    let [c, _, _] = s.shape;
    if c == chans {
        return s;
    }
    SegSample {
        pixels: adapt_pixels(&s.pixels, s.shape, chans),
        shape: [chans, s.shape[1], s.shape[2]],
        mask: s.mask,
    }
}

/// 8-bit planes `[c, h, w]` with `chans` channels: RGB averaged to grey, grey repeated.
pub fn adapt_pixels(pixels: &[u8], [c, h, w]: [usize; 3], chans: usize) -> Vec<u8> {
    let hw = h * w;
    match (c, chans) {
        (a, b) if a == b => pixels.to_vec(),
        (3, 1) => (0..hw)
            .map(|i| {
                ((pixels[i] as u16 + pixels[hw + i] as u16 + pixels[2 * hw + i] as u16) / 3) as u8
            })
            .collect(),
        (1, n) => pixels.repeat(n),
        (_, n) => pixels[..hw].repeat(n),
    }
}
