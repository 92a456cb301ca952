use std::path::PathBuf;

use anyhow::{bail, Result};
use scalenet::data::seg::{SegDataset, SEG_DATA_HELP};
use scalenet::overlay::{write_grey_png, write_overlay};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, default_value = "fmnist-scenes-mini", help = SEG_DATA_HELP)]
    data: String,
    /// train, val or test.
    #[arg(long, default_value = "test")]
    split: String,
    /// How many scenes, from the first.
    #[arg(short = 'n', long, default_value_t = 8)]
    count: usize,
    /// Writes scene_<i>.png (the image), scene_<i>_mask.png (class indices) and
    /// scene_<i>_truth.png (the labels drawn over the image) here.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let data = SegDataset::open(&args.data)?;
    let split = match args.split.as_str() {
        "train" => &data.train,
        "val" => &data.val,
        "test" => &data.test,
        s => bail!("--split {s}: expected train, val or test"),
    };
    std::fs::create_dir_all(&args.out)?;
    let n = args.count.min(split.len());
    for i in 0..n {
        let s = split.get(i)?;
        let [c, h, w] = s.shape;
        if c != 1 {
            bail!("{c}-channel scenes are not drawn");
        }
        write_grey_png(&args.out.join(format!("scene_{i}.png")), &s.pixels, h, w)?;
        write_grey_png(&args.out.join(format!("scene_{i}_mask.png")), &s.mask, h, w)?;
        write_overlay(
            &args.out.join(format!("scene_{i}_truth.png")),
            &s.pixels,
            s.shape,
            &s.mask,
            &data.classes,
        )?;
    }
    println!(
        "wrote {n} {} scenes of --data {} to {}",
        args.split,
        args.data,
        args.out.display()
    );
    Ok(())
}
