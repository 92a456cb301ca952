use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use scalenet::checkpoint::load_model;
use scalenet::data::transform::Transform;
use scalenet::data::{folder, RawImage, FMNIST_CLASSES};
use scalenet::device::DEVICE_HELP;
use scalenet::model::weights::to_vec;

#[derive(clap::Args, Debug)]
pub struct Args {
    model_dir: PathBuf,
    /// JPEG or PNG files.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[arg(long, default_value_t = 5)]
    top: usize,
    #[arg(long, default_value = "flex", help = DEVICE_HELP)]
    device: String,
}

pub fn run(args: Args) -> Result<()> {
    let device = super::device(&args.device)?;
    let loaded = load_model(&args.model_dir, &device)?;
    let arch = loaded.network.arch();
    let (in_chans, img_size, num_classes) = (arch.in_chans(), arch.img_size(), arch.num_classes());
    // Class names: config.json's label_names, else Fashion-MNIST's for 10-class grey models.
    let names: Vec<String> = match loaded
        .config
        .raw
        .get("label_names")
        .and_then(|v| v.as_array())
    {
        Some(a) => a
            .iter()
            .map(|v| v.as_str().unwrap_or("?").to_string())
            .collect(),
        None if num_classes == 10 && in_chans == 1 => {
            FMNIST_CLASSES.iter().map(|s| s.to_string()).collect()
        }
        None => (0..num_classes).map(|i| format!("class {i}")).collect(),
    };
    let tf = Transform::new(in_chans, img_size, &loaded.config.pretrained_cfg, None);
    for path in &args.images {
        let (pixels, h, w) = folder::decode(path)?;
        let small = h <= img_size[0] && w <= img_size[1];
        let x = tf.apply(
            &RawImage {
                pixels,
                shape: [3, h, w],
                label: 0,
            },
            small,
            &mut rand::rngs::StdRng::seed_from_u64(0),
        );
        let x = Tensor::<4>::from_data(
            TensorData::new(x, [1, in_chans, img_size[0], img_size[1]]),
            &device,
        );
        let p = to_vec(softmax(loaded.network.forward(x), 1));
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        println!("{}", path.display());
        for &i in order.iter().take(args.top) {
            println!(
                "  {:>6.2}%  {}",
                100.0 * p[i],
                names.get(i).map_or("?", String::as_str)
            );
        }
    }
    Ok(())
}
