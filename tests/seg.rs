//! Segmentation against its references: the metric against mmsegmentation's `IoUMetric`
//! (tests/fixtures/gen_iou_fixtures.py writes the fixture with mmsegmentation's own code path).

use std::path::Path;

use scalenet::checkpoint::TensorFile;
use scalenet::train::iou::IouAreas;

fn as_u32(v: &[f32]) -> Vec<u32> {
    v.iter().map(|&x| x as u32).collect()
}

/// Same NaN pattern and values to f32 rounding (the fixture stores f32).
fn assert_close(got: &[f64], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.is_nan(), w.is_nan(), "{what}: {got:?} vs {want:?}");
        if !w.is_nan() {
            assert!((g - *w as f64).abs() < 1e-6, "{what}: {got:?} vs {want:?}");
        }
    }
}

#[test]
fn miou_equals_mmsegmentation_iou_metric() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seg/iou.safetensors");
    let mut f = TensorFile::read(&path).unwrap();
    let labels = f.take("labels").unwrap();
    let preds = as_u32(&f.take("preds").unwrap().values);
    let (n, hw) = (labels.shape[0], labels.shape[1] * labels.shape[2]);
    let labels = as_u32(&labels.values);
    let num_classes = f.tensors["iou"].shape[0];
    let mut areas = IouAreas::new(num_classes, 255);
    for i in 0..n {
        let img = i * hw..(i + 1) * hw;
        areas.add(&preds[img.clone()], &labels[img]);
    }
    for (key, got) in [
        ("area_intersect", &areas.intersect),
        ("area_union", &areas.union),
        ("area_pred", &areas.pred),
        ("area_label", &areas.label),
    ] {
        let want = as_u32(&f.take(key).unwrap().values);
        let got: Vec<u32> = got.iter().map(|&x| x as u32).collect();
        assert_eq!(got, want, "{key}");
    }
    let m = areas.metrics();
    assert_close(&m.iou, &f.take("iou").unwrap().values, "IoU");
    assert_close(&m.acc, &f.take("acc").unwrap().values, "Acc");
    assert_close(&[m.aacc], &f.take("aacc").unwrap().values, "aAcc");
    assert_close(&[m.miou], &f.take("miou").unwrap().values, "mIoU");
    assert_close(&[m.macc], &f.take("macc").unwrap().values, "mAcc");
    assert!(m.iou[num_classes - 1].is_nan() && m.iou[num_classes - 2] == 0.0);
}

/// Every image fixture's feature maps (a ViT's chosen blocks, a Swin's stages; plain and
/// grown) against timm's `forward_intermediates` and the package's grown models
/// (tests/fixtures/gen_seg_fixtures.py), ≤ 1e-4.
#[test]
fn feature_maps_match_timm_forward_intermediates() {
    use burn::tensor::{Device, Tensor, TensorData};
    use scalenet::checkpoint::model_dir::load_model;
    use scalenet::model::weights::to_vec;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let device = Device::flex();
    let mut checked = 0;
    for kind in ["timm", "swin", "grown", "grown_swin"] {
        let mut dirs: Vec<_> = std::fs::read_dir(root.join(kind))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("io.safetensors").is_file())
            .collect();
        dirs.sort();
        for dir in dirs {
            let name = dir.file_name().unwrap().to_string_lossy().to_string();
            let path = root.join(format!("seg/features/{kind}/{name}.safetensors"));
            let mut want = TensorFile::read(&path).unwrap();
            let indices: Vec<usize> = want
                .take("indices")
                .unwrap()
                .values
                .iter()
                .map(|&v| v as usize)
                .collect();
            let input = TensorFile::read(&dir.join("io.safetensors"))
                .unwrap()
                .take("input")
                .unwrap();
            let x =
                Tensor::<4>::from_data(TensorData::new(input.values, input.shape.clone()), &device);
            let net = load_model(&dir, &device).unwrap().network;
            let got = net.feature_maps(x, &indices, &mut None);
            assert_eq!(
                got.len(),
                want.tensors.len(),
                "{kind}/{name}: number of maps"
            );
            for (k, map) in got.into_iter().enumerate() {
                let w = want.take(&format!("feat.{k}")).unwrap();
                assert_eq!(map.dims().to_vec(), w.shape, "{kind}/{name} map {k}");
                let err = to_vec(map)
                    .iter()
                    .zip(&w.values)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                eprintln!("{kind}/{name} map {k}: max abs error {err:e}");
                assert!(err <= 1e-4, "{kind}/{name} map {k}: {err}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 18);
}

#[test]
fn default_out_indices_space_blocks_evenly_and_end_at_the_last() {
    use scalenet::model::vit::default_out_indices;
    assert_eq!(default_out_indices(12, 4), vec![2, 5, 8, 11]);
    assert_eq!(default_out_indices(24, 4), vec![5, 11, 17, 23]);
    assert_eq!(default_out_indices(6, 4), vec![1, 2, 4, 5]);
    assert_eq!(default_out_indices(2, 4), vec![0, 0, 1, 1]);
}

/// Segmentors (UperNet with its FCN auxiliary head, and the linear probe) on ViT and Swin
/// backbones, plain and grown, against the PyTorch reference that follows mmsegmentation
/// (python/scalenet_torch/seg.py; tests/fixtures/gen_seg_fixtures.py), eval mode, ≤ 1e-4.
#[test]
fn segmentor_logits_match_the_mmsegmentation_reference() {
    use burn::tensor::{Device, Tensor, TensorData};
    use scalenet::checkpoint::seg_dir::load_segmentor;
    use scalenet::model::weights::to_vec;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seg/models");
    let device = Device::flex();
    let mut names: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert_eq!(names.len(), 6);
    for dir in names {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let (_, seg) = load_segmentor(&dir, &device).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut io = TensorFile::read(&dir.join("io.safetensors")).unwrap();
        let input = io.take("input").unwrap();
        let x = Tensor::<4>::from_data(TensorData::new(input.values, input.shape), &device);
        let (logits, aux) = seg.forward(x);
        let mut outs = vec![("logits", logits)];
        outs.extend(aux.map(|a| ("aux_logits", a)));
        assert_eq!(outs.len(), io.tensors.len(), "{name}: heads");
        for (key, got) in outs {
            let want = io.take(key).unwrap();
            assert_eq!(got.dims().to_vec(), want.shape, "{name} {key}");
            let err = to_vec(got)
                .iter()
                .zip(&want.values)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            eprintln!("{name} {key}: max abs error {err:e}");
            assert!(err <= 1e-4, "{name} {key}: {err}");
        }
    }
}

/// A ViT backbone at another input size: its position table resampled as timm's
/// `resample_abs_pos_embed` does (bicubic, antialiased), up, down and reshaped.
#[test]
fn pos_embed_resampling_matches_timm() {
    use scalenet::checkpoint::seg_dir::resample_pos_embed;
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seg/pos_embed.safetensors");
    let mut f = TensorFile::read(&path).unwrap();
    let pe = f.take("pos_embed").unwrap();
    for (key, new) in [("up", [7, 9]), ("down", [3, 2]), ("same_area", [5, 4])] {
        let want = f.take(key).unwrap();
        let got = resample_pos_embed(&pe.values, 1, [4, 5], new, 6);
        assert_eq!(got.len(), want.values.len(), "{key}");
        let err = got
            .iter()
            .zip(&want.values)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err <= 1e-5, "{key}: max abs error {err}");
    }
}

fn scalenet() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_scalenet"));
    cmd.env("SCALENET_BLAS", "none").env("HF_HUB_OFFLINE", "1");
    cmd
}

/// `init --arch upernet --backbone` around a grown ViT at another input size, then `forward`:
/// logits at stride 4 and the auxiliary head's; the directory loads back to the same model.
#[test]
fn init_upernet_then_forward_from_the_cli() {
    use burn::tensor::Device;
    use scalenet::checkpoint::seg_dir::{load_segmentor, save_segmentor};
    let tmp = std::env::temp_dir().join(format!("scalenet-seg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let out = tmp.join("seg");
    let o = scalenet()
        .args([
            "init",
            "--arch",
            "upernet",
            "--num-classes",
            "4",
            "--img-size",
            "48",
        ])
        .arg("--backbone")
        .arg(fixtures.join("grown/irregular_full"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let input = tmp.join("in.safetensors");
    let x: Vec<f32> = (0..2 * 3 * 48 * 48)
        .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
        .collect();
    let t = scalenet::model::NamedTensor {
        name: "input".into(),
        shape: vec![2, 3, 48, 48],
        values: x,
    };
    scalenet::checkpoint::write_tensors(&input, &[t]).unwrap();
    let o = scalenet()
        .arg("forward")
        .arg(&out)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(tmp.join("out.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("logits [2, 4, 24, 24]") && err.contains("aux_logits [2, 4, 6, 6]"),
        "{err}"
    );
    // Saved again, it is the same model.
    let device = Device::flex();
    let (cfg, seg) = load_segmentor(&out, &device).unwrap();
    save_segmentor(&tmp.join("again"), &cfg, &seg).unwrap();
    let a = std::fs::read(out.join("model.safetensors")).unwrap();
    let b = std::fs::read(tmp.join("again/model.safetensors")).unwrap();
    assert_eq!(a, b);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Asking for a segmentor wrongly is one line and writes nothing.
#[test]
fn init_segmentor_mistakes_are_one_line() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let tmp = std::env::temp_dir().join(format!("scalenet-seg-bad-{}", std::process::id()));
    let seg_dir = fixtures.join("seg/models/vit_upernet");
    let cases: [(Vec<std::ffi::OsString>, &str); 3] = [
        (vec!["--arch".into(), "upernet".into()], "needs --backbone"),
        (
            vec![
                "--arch".into(),
                "upernet".into(),
                "--backbone".into(),
                seg_dir.into(),
            ],
            "already a segmentation model",
        ),
        (
            vec![
                "--arch".into(),
                "deit_tiny_patch16_224".into(),
                "--backbone".into(),
                fixtures.join("timm/distilled").into(),
            ],
            "--backbone goes with",
        ),
    ];
    for (args, want) in cases {
        let o = scalenet()
            .arg("init")
            .args(&args)
            .arg("--out")
            .arg(&tmp)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err}");
        assert!(!tmp.exists());
    }
}

/// One training forward and backward against the reference (tests/fixtures/gen_seg_fixtures.py,
/// `write_train_steps`): BatchNorm on batch statistics, the loss as mmsegmentation computes it
/// (ignored pixels, the auxiliary head at 0.4), the running statistics after the forward and
/// gradients, ≤ 1e-4.
#[test]
fn one_training_step_matches_the_reference() {
    use burn::module::Module;
    use burn::tensor::{Device, Tensor, TensorData};
    use scalenet::checkpoint::seg_dir::load_segmentor;
    use scalenet::model::weights::to_vec;
    use scalenet::segment::layers::TrainState;
    use scalenet::segment::loss::{segmentation_loss, PixelLabels};

    let close = |got: Vec<f32>, want: &[f32], what: &str| {
        assert_eq!(got.len(), want.len(), "{what}");
        let err = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0.0f32, f32::max);
        eprintln!("{what}: max error {err:e}");
        assert!(err <= 1e-4, "{what}: {err}");
    };
    for name in ["vit_upernet", "swin_upernet"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/seg/models")
            .join(name);
        let device = Device::flex().autodiff();
        let (cfg, mut seg) = load_segmentor(&dir, &device).unwrap();
        let mut want = TensorFile::read(&dir.join("train_step.safetensors")).unwrap();
        let labels_t = want.take("labels").unwrap();
        let labels: Vec<u8> = labels_t.values.iter().map(|&v| v as u8).collect();
        let shape = [labels_t.shape[0], labels_t.shape[1], labels_t.shape[2]];
        let input = TensorFile::read(&dir.join("io.safetensors"))
            .unwrap()
            .take("input")
            .unwrap();
        let x = Tensor::<4>::from_data(TensorData::new(input.values, input.shape), &device);
        let mut state = TrainState::new(0.0, 0);
        let (logits, aux) = seg.forward_train(x, &mut None, &mut Some(&mut state));
        let weight = cfg.spec.aux.as_ref().unwrap().loss_weight;
        let pixels = PixelLabels {
            values: &labels,
            shape,
            ignore_index: 255,
        };
        let loss = segmentation_loss(logits, aux.map(|a| (a, weight)), &pixels);
        close(
            to_vec(loss.clone()),
            &want.take("loss").unwrap().values,
            &format!("{name} loss"),
        );
        let grads = loss.backward();
        let grad = |p: &burn::module::Param<Tensor<4>>| to_vec(p.grad(&grads).unwrap());
        let uper = match &seg.decode_head {
            scalenet::segment::head::DecodeHead::Uper(h) => h,
            _ => unreachable!(),
        };
        close(
            grad(&uper.conv_seg.weight),
            &want
                .take("grad.decode_head.conv_seg.weight")
                .unwrap()
                .values,
            &format!("{name} grad conv_seg"),
        );
        let bn_grad = to_vec(uper.fpn_bottleneck.bn.weight.grad(&grads).unwrap());
        close(
            bn_grad,
            &want
                .take("grad.decode_head.fpn_bottleneck.bn.weight")
                .unwrap()
                .values,
            &format!("{name} grad fpn_bottleneck.bn"),
        );
        let aux_w = &seg.auxiliary_head.as_ref().unwrap().conv.conv.weight;
        close(
            grad(aux_w),
            &want
                .take("grad.auxiliary_head.convs.0.conv.weight")
                .unwrap()
                .values,
            &format!("{name} grad aux conv"),
        );
        seg.update_running(state.stats);
        let mut checked = 0;
        for t in seg.valid().export().tensors {
            if let Some(w) = want.tensors.get(&t.name) {
                close(t.values, &w.values, &format!("{name} {}", t.name));
                checked += 1;
            }
        }
        assert!(
            checked >= 10,
            "{name}: {checked} running statistics checked"
        );
    }
}

/// A new user's path on the built-in scenes: a backbone, `init --arch upernet`, `train` (the
/// validation mIoU each epoch), a run stopped mid-epoch resumes to the same weights (the
/// BatchNorm running statistics included), and `eval` reports the test split's mIoU table.
#[test]
fn train_resume_and_eval_a_segmentor_on_scenes() {
    use std::ffi::OsString;
    let tmp = std::env::temp_dir().join(format!("scalenet-seg-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let os = |parts: &[&dyn AsRef<std::ffi::OsStr>]| -> Vec<OsString> {
        parts.iter().map(|p| p.as_ref().to_os_string()).collect()
    };
    let run = |args: Vec<OsString>| scalenet().args(args).output().unwrap();
    let ok = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o
    };
    let backbone = tmp.join("vit");
    let mut init = os(&[
        &"init",
        &"--arch",
        &"vit_tiny_patch16_224",
        &"--out",
        &backbone,
    ]);
    for a in [
        "img_size=96",
        "in_chans=1",
        "embed_dim=16",
        "depth=2",
        "num_heads=2",
    ] {
        init.extend(os(&[&"--model-arg", &a]));
    }
    ok(run(init));
    let seg = tmp.join("seg");
    ok(run(os(&[
        &"init",
        &"--arch",
        &"upernet",
        &"--channels",
        &"8",
        &"--aux-channels",
        &"8",
        &"--backbone",
        &backbone,
        &"--out",
        &seg,
    ])));
    let train = |out: &Path, extra: &[&str]| {
        let mut a = os(&[&"train", &seg, &"--out", &out]);
        for x in [
            "--data",
            "fmnist-scenes-mini",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--train-subset",
            "32",
            "--test-subset",
            "16",
            "--precision",
            "f32",
            "--sched",
            "poly",
        ]
        .iter()
        .chain(extra)
        {
            a.push(x.into());
        }
        run(a)
    };
    let straight = tmp.join("straight");
    let o = ok(train(&straight, &[]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("val mIoU"), "{err}");
    let metrics = std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.contains("val_miou") && metrics.contains("val_aacc"),
        "{metrics}"
    );
    let stopped = tmp.join("stopped");
    let o = train(&stopped, &["--stop-after-steps", "6"]);
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    ok(run(os(&[&"train", &"--resume", &stopped])));
    let weights = |r: &Path| std::fs::read(r.join("model/model.safetensors")).unwrap();
    assert!(
        weights(&straight) == weights(&stopped),
        "resumed weights differ"
    );
    let json = tmp.join("eval.json");
    let o = ok(run(os(&[
        &"eval",
        &straight.join("model"),
        &"--data",
        &"fmnist-scenes-mini",
        &"--test-subset",
        &"8",
        &"--json",
        &json,
    ])));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("mIoU") && out.contains("Ankle boot"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let miou = v["mIoU"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&miou), "{v}");
    // Square scenes cover a square input in one window: sliding changes nothing there.
    let slide_json = tmp.join("slide.json");
    ok(run(os(&[
        &"eval",
        &straight.join("model"),
        &"--data",
        &"fmnist-scenes-mini",
        &"--test-subset",
        &"8",
        &"--mode",
        &"slide:5",
        &"--json",
        &slide_json,
    ])));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&slide_json).unwrap()).unwrap();
    assert_eq!(
        (s["mode"].as_str(), s["mIoU"].as_f64()),
        (Some("slide:5"), Some(miou))
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

fn folders() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seg/folders")
}

/// The folder layouts users have load: a generic images/ + masks/ tree (a palette mask read as
/// its indices) and ADE20K's, whose `reduce_zero_label` makes 0 ignored and k into k − 1.
#[test]
fn segmentation_folders_load() {
    use scalenet::data::seg::SegDataset;
    let g = SegDataset::open(&format!(
        "segfolder:{}",
        folders().join("generic").display()
    ))
    .unwrap();
    assert_eq!(g.classes, ["background", "circle", "square"]);
    assert_eq!((g.train.len(), g.val.len(), g.test.len()), (3, 1, 1));
    for i in 0..3 {
        let s = g.train.get(i).unwrap();
        assert_eq!(s.shape, [3, 6, 8]);
        assert_eq!(s.mask[0], 255, "sample {i}");
        assert!(
            s.mask.iter().all(|&l| l < 3 || l == 255),
            "sample {i}: {:?}",
            s.mask
        );
        assert!(
            s.mask.contains(&2),
            "sample {i}: the palette's indices, not its colours"
        );
    }
    let ade = folders().join("ade/ADEChallengeData2016");
    let a = SegDataset::open(&format!("ade20k:{}", ade.display())).unwrap();
    assert_eq!(a.num_classes(), 150);
    assert_eq!((a.train.len() + a.val.len(), a.test.len()), (4, 2));
    let s = a.test.get(0).unwrap();
    assert_eq!(s.mask[..3], [255, 0, 149]);
}

/// Bad segmentation data is one clear error naming the file: a mask of another size, a class
/// beyond the list, a colour mask, a truncated PNG, an image without a mask.
#[test]
fn bad_segmentation_folders_are_one_clear_error() {
    use scalenet::data::seg::SegDataset;
    let tmp = std::env::temp_dir().join(format!("scalenet-segfolder-{}", std::process::id()));
    let copy = |name: &str| {
        let dst = tmp.join(name);
        let src = folders().join("generic");
        for sub in ["images/train", "images/val", "masks/train", "masks/val"] {
            std::fs::create_dir_all(dst.join(sub)).unwrap();
            for e in std::fs::read_dir(src.join(sub)).unwrap() {
                let p = e.unwrap().path();
                std::fs::copy(&p, dst.join(sub).join(p.file_name().unwrap())).unwrap();
            }
        }
        std::fs::copy(src.join("classes.txt"), dst.join("classes.txt")).unwrap();
        dst
    };
    let mask = |d: &Path| d.join("masks/train/a.png");
    type Spoil<'a> = Box<dyn Fn(&Path) + 'a>;
    let cases: Vec<(&str, Spoil, &str)> = vec![
        (
            "size",
            Box::new(|d| image::GrayImage::new(5, 5).save(mask(d)).unwrap()),
            "the mask is 5×5 but its image",
        ),
        (
            "class",
            Box::new(|d| {
                image::GrayImage::from_pixel(8, 6, image::Luma([7]))
                    .save(mask(d))
                    .unwrap()
            }),
            "holds class 7, but there are 3 classes",
        ),
        (
            "rgb",
            Box::new(|d| image::RgbImage::new(8, 6).save(mask(d)).unwrap()),
            "colour (RGB) image where a mask of class indices",
        ),
        (
            "truncated",
            Box::new(|d| {
                let b = std::fs::read(mask(d)).unwrap();
                std::fs::write(mask(d), &b[..b.len() / 2]).unwrap();
            }),
            "truncated or corrupt PNG",
        ),
        (
            "orphan",
            Box::new(|d| std::fs::remove_file(mask(d)).unwrap()),
            "not found (the mask of",
        ),
    ];
    for (name, spoil, want) in cases {
        let d = copy(name);
        spoil(&d);
        let err = SegDataset::open(&format!("segfolder:{}", d.display()))
            .and_then(|ds| (0..ds.train.len()).try_for_each(|i| ds.train.get(i).map(|_| ())))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want) && err.contains("a.png"), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `expand` on a segmentor grows its backbone in place of a classifier's: the heads keep their
/// weights, a ViT's out_indices spread over the grown depth, and the result runs.
#[test]
fn expand_grows_a_segmentors_backbone() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seg/models");
    let tmp = std::env::temp_dir().join(format!("scalenet-seg-expand-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let out = tmp.join("grown");
    let o = scalenet()
        .arg("expand")
        .arg(fixtures.join("vit_upernet"))
        .args(["--depth", "8", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["out_indices"], serde_json::json!([1, 3, 5, 7]));
    assert!(cfg["backbone"]["scalenet"].is_object(), "{cfg}");
    let read = |d: &Path| {
        TensorFile::read(&d.join("model.safetensors"))
            .unwrap()
            .tensors
    };
    let (before, after) = (read(&fixtures.join("vit_upernet")), read(&out));
    let heads: Vec<_> = before
        .keys()
        .filter(|k| !k.starts_with("backbone."))
        .collect();
    assert!(heads.len() > 50);
    for k in heads {
        assert_eq!(before[k].values, after[k].values, "{k}");
    }
    let o = scalenet()
        .arg("forward")
        .arg(&out)
        .arg("--input")
        .arg(fixtures.join("vit_upernet/io.safetensors"))
        .arg("--output")
        .arg(tmp.join("o.safetensors"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `reproduce --family seg` on the committed classification study's backbones at a tiny size:
/// each arm's UperNet trains, is evaluated once on the whole validation and test splits, the
/// report holds its row; a second call reuses the finished runs; a directory that is not a
/// classification study is one line.
#[test]
fn the_segmentation_study_runs_and_resumes() {
    let tmp = std::env::temp_dir().join(format!("scalenet-seg-study-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let converged = Path::new(env!("CARGO_MANIFEST_DIR")).join("studies/converged");
    let reproduce = |backbones: &Path| {
        scalenet()
            .args(["reproduce", "--family", "seg", "--out"])
            .arg(&tmp)
            .arg("--backbones")
            .arg(backbones)
            .args(["--data", "fmnist-scenes-mini", "--img-size", "16"])
            .args([
                "--channels",
                "8",
                "--train-subset",
                "16",
                "--test-subset",
                "8",
            ])
            .args(["--epochs", "1", "--seeds", "1", "--batch-size", "8"])
            .args(["--only", "base,grown", "--precision", "f32"])
            .output()
            .unwrap()
    };
    let o = reproduce(&converged);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = std::fs::read_to_string(tmp.join("RESULTS.md")).unwrap();
    for row in [
        "| base | 4 | 1 |",
        "| grown | 8 | 1 |",
        "| Trouser |",
        "Test mIoU: grown",
    ] {
        assert!(report.contains(row), "{row} not in {report}");
    }
    assert!(tmp.join("results.png").is_file());
    let fin: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.join("runs/grown-s0/final.json")).unwrap())
            .unwrap();
    let miou = fin["test_miou"].as_f64().unwrap();
    assert!(
        (0.0..=100.0).contains(&miou) && fin["train_images"] == 16,
        "{fin}"
    );
    let again = reproduce(&converged);
    assert!(again.status.success());
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("grown-s0: done earlier, reusing"), "{said}");
    let report = |family: &str| {
        scalenet()
            .args(["reproduce", "--family", family, "--report", "--out"])
            .arg(&tmp)
            .output()
            .unwrap()
    };
    std::fs::remove_file(tmp.join("RESULTS.md")).unwrap();
    assert!(report("seg").status.success());
    assert!(
        tmp.join("RESULTS.md").is_file(),
        "--report rewrites the report"
    );
    let o = report("vit");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.lines().count() == 1, "{err}");
    let o = reproduce(&tmp.join("runs"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.lines().count() == 1, "{err}");
    assert!(err.contains("not a finished classification study"), "{err}");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Sliding-window inference against mmsegmentation's `slide_inference` (the package's
/// transcription; tests/fixtures/gen_seg_fixtures.py `write_slide`): overlapping windows, the
/// last moved back to the edge, logits averaged, ≤ 1e-4, for a ViT and a Swin UperNet.
#[test]
fn sliding_windows_match_mmsegmentation() {
    use burn::tensor::{Device, Tensor, TensorData};
    use scalenet::checkpoint::seg_dir::load_segmentor;
    let device = Device::flex();
    for name in ["vit_upernet", "swin_upernet"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/seg/models")
            .join(name);
        let (config, net) = load_segmentor(&dir, &device).unwrap();
        let mut f = TensorFile::read(&dir.join("slide.safetensors")).unwrap();
        let x = f.take("input").unwrap();
        let want = f.take("logits").unwrap();
        let stride = f.take("stride").unwrap().values;
        let x = Tensor::<4>::from_data(TensorData::new(x.values, x.shape), &device);
        let crop = config.backbone.arch.img_size();
        let got = net.slide(x, crop, [stride[0] as usize, stride[1] as usize]);
        assert_eq!(got.dims().to_vec(), want.shape, "{name}");
        let got = scalenet::model::weights::to_vec(got);
        let err = got
            .iter()
            .zip(&want.values)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err <= 1e-4, "{name}: max abs error {err}");
    }
}

/// `scenes` writes each scene, its index mask and its labelled overlay, and the garments'
/// boxes as COCO instances (the format pycocotools and detection tools read); a bad split is
/// one line.
#[test]
fn scenes_write_images_masks_and_coco_boxes() {
    let tmp = std::env::temp_dir().join(format!("scalenet-scenes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let run = |split: &str| {
        scalenet()
            .args([
                "scenes",
                "--data",
                "fmnist-scenes-mini",
                "-n",
                "3",
                "--split",
                split,
            ])
            .arg("--out")
            .arg(&tmp)
            .output()
            .unwrap()
    };
    let o = run("val");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for i in 0..3 {
        for f in ["", "_mask", "_truth"] {
            assert!(tmp.join(format!("scene_{i}{f}.png")).is_file());
        }
    }
    let coco: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.join("annotations.json")).unwrap()).unwrap();
    assert_eq!(coco["images"].as_array().unwrap().len(), 3);
    assert_eq!(coco["categories"].as_array().unwrap().len(), 10);
    let anns = coco["annotations"].as_array().unwrap();
    assert!(anns.len() >= 3, "{coco}");
    for a in anns {
        let b: Vec<u64> = a["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert!(
            b[2] > 0 && b[3] > 0 && b[0] + b[2] <= 96 && b[1] + b[3] <= 96,
            "{a}"
        );
        let area = a["area"].as_u64().unwrap();
        assert!(area > 0 && area <= b[2] * b[3], "{a}");
        assert!(
            (1..=10).contains(&a["category_id"].as_u64().unwrap()),
            "{a}"
        );
    }
    let set = scalenet::data::coco::read_coco(&tmp.join("annotations.json"), &tmp).unwrap();
    assert_eq!(
        set.boxes.len(),
        anns.len(),
        "our COCO reader takes what `scenes` wrote"
    );
    let o = run("dev");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.lines().count() == 1 && err.contains("--split dev"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
