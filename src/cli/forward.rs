use std::path::PathBuf;

use anyhow::Result;
use scalenet::checkpoint::{load_model, write_tensors};
use scalenet::device::DEVICE_HELP;
use scalenet::inference::{run_batched, ImageBatch};
use scalenet::model::NamedTensor;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory (config.json + model.safetensors), or a GGUF language model.
    model_dir: PathBuf,
    /// safetensors file holding `input`: [N, C, H, W] f32, already normalised; for a language
    /// model, `input_ids`: [N, T] i64 or i32.
    #[arg(long)]
    input: PathBuf,
    /// safetensors file to write; it receives `logits`: [N, num_classes] f32 ([N, T, vocab]
    /// for a language model).
    #[arg(long)]
    output: PathBuf,
    /// Images per forward pass; bounds memory use.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value = "flex", help = DEVICE_HELP)]
    device: String,
}

pub fn run(args: Args) -> Result<()> {
    if scalenet::checkpoint::hf_dir::is_language_model(&args.model_dir) {
        return language_model(&args);
    }
    if scalenet::checkpoint::seg_dir::is_segmentation_dir(&args.model_dir) {
        return segmentation(&args);
    }
    let device = super::device(&args.device)?;
    let loaded = load_model(&args.model_dir, &device)?;
    let images = ImageBatch::read(&args.input, &loaded.config.arch)?;
    let model = &loaded.network;
    let (logits, width) = run_batched(
        &images,
        args.batch_size,
        &device,
        |x| model.forward(x),
        |_| {},
    );
    // No image ran: the width is the head's (or, without one, the features').
    let arch = &loaded.config.arch;
    let width = match (images.len(), arch.num_classes()) {
        (0, 0) => arch.num_features(),
        (0, k) => k,
        _ => width,
    };
    let out = NamedTensor {
        name: "logits".into(),
        shape: vec![images.len(), width],
        values: logits,
    };
    write_tensors(&args.output, &[out])?;
    eprintln!(
        "wrote logits [{}, {}] to {}",
        images.len(),
        width,
        args.output.display()
    );
    Ok(())
}

/// `input [N, C, H, W]` → the decode head's `logits [N, K, H/4, W/4]` (stride 4 for UperNet; the
/// linear probe's at its level's stride) and UperNet's `aux_logits`, in eval mode.
fn segmentation(args: &Args) -> Result<()> {
    use burn::tensor::{Tensor, TensorData};
    use scalenet::model::weights::to_vec;
    let device = super::device(&args.device)?;
    let (config, seg) = scalenet::checkpoint::seg_dir::load_segmentor(&args.model_dir, &device)?;
    let images = ImageBatch::read(&args.input, &config.backbone.arch)?;
    let [n, c, h, w] = images.shape;
    let per = c * h * w;
    let mut outs: Vec<(&str, Vec<usize>, Vec<f32>)> =
        vec![("logits", vec![], vec![]), ("aux_logits", vec![], vec![])];
    for start in (0..n).step_by(args.batch_size.max(1)) {
        let b = args.batch_size.max(1).min(n - start);
        let data = TensorData::new(
            images.values[start * per..(start + b) * per].to_vec(),
            [b, c, h, w],
        );
        let (logits, aux) = seg.forward(Tensor::<4>::from_data(data, &device));
        for ((_, shape, values), t) in outs.iter_mut().zip([Some(logits), aux]) {
            let Some(t) = t else { continue };
            let [_, k, oh, ow] = t.dims();
            *shape = vec![n, k, oh, ow];
            values.extend(to_vec(t));
        }
    }
    let tensors: Vec<NamedTensor> = outs
        .into_iter()
        .filter(|(_, shape, _)| !shape.is_empty())
        .map(|(name, shape, values)| NamedTensor {
            name: name.into(),
            shape,
            values,
        })
        .collect();
    write_tensors(&args.output, &tensors)?;
    let shapes: Vec<String> = tensors
        .iter()
        .map(|t| format!("{} {:?}", t.name, t.shape))
        .collect();
    eprintln!(
        "wrote {} to {}",
        shapes.join(" and "),
        args.output.display()
    );
    Ok(())
}

/// `input_ids [N, T]` → `logits [N, T, vocab]`, `--batch-size` sequences at a time.
fn language_model(args: &Args) -> Result<()> {
    use burn::tensor::{Int, Tensor, TensorData};
    let device = super::device(&args.device)?;
    let loaded = scalenet::checkpoint::hf_dir::load_llama(&args.model_dir, &device)?;
    let (shape, ids) = scalenet::checkpoint::read_int_tensor(&args.input, "input_ids")?;
    let vocab = loaded.config.vocab_size;
    let bad = |msg: String| scalenet::Error::BadInput {
        path: args.input.clone(),
        msg,
    };
    let [n, t] = shape[..] else {
        return Err(bad(format!("input_ids has shape {shape:?}; expected [N, T]")).into());
    };
    if let Some(id) = ids.iter().find(|&&i| i < 0 || i as usize >= vocab) {
        return Err(bad(format!(
            "input_ids holds {id}, outside the vocabulary 0..{vocab}"
        ))
        .into());
    }
    let mut logits = Vec::with_capacity(n * t * vocab);
    for rows in ids.chunks((args.batch_size.max(1) * t).max(1)) {
        let b = rows.len() / t.max(1);
        let x = Tensor::<2, Int>::from_data(TensorData::new(rows.to_vec(), [b, t]), &device);
        logits.extend(scalenet::model::weights::to_vec(
            loaded.model.forward(x, None),
        ));
    }
    let out = NamedTensor {
        name: "logits".into(),
        shape: vec![n, t, vocab],
        values: logits,
    };
    write_tensors(&args.output, &[out])?;
    eprintln!(
        "wrote logits [{n}, {t}, {vocab}] to {}",
        args.output.display()
    );
    Ok(())
}
