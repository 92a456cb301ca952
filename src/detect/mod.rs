//! Object detection on any image backbone (issue 38), built from torchvision's definitions.
//! So far the box operations a detector's post-processing needs (`boxes`); the metric is
//! `train::coco_ap`.

pub mod boxes;
