#!/usr/bin/env python
"""Fine-tune a cgh-pretrained R50 with detectron2 on VOC or COCO (docs/evaluation.md#detection). See README.md beside
this file.

detectron2 has no ``Res5ROIHeadsExtraNorm`` built in: the configs in this folder name it, so this script registers it
(MoCo's detection recipe adds the same head) and otherwise runs detectron2's own ``DefaultTrainer`` (SyncBN, AMP,
precise BN, checkpoints, linear scaling by ``SOLVER.REFERENCE_WORLD_SIZE``) with the evaluator that matches each
test set. It needs detectron2 and a GPU; it is not part of the ``cgh`` package.

    python detection/train_net.py --config-file detection/pascal_voc_R_50_C4_24k_cgh.yaml --num-gpus 8 \
        MODEL.WEIGHTS cgh_r50_detectron2.pkl OUTPUT_DIR output/voc
"""

import os

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
from detectron2.layers import get_norm
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """Res5ROIHeads with one more norm layer (MODEL.RESNETS.NORM, SyncBN here) after the res5 stage.

    Why: a torchvision ResNet's res5 output feeds a pooled classifier with no norm of its own, so the detector's box
    and mask predictors would see un-normalised activations whose scale depends on the pretraining method. The extra
    (Sync)BN, fine-tuned with the rest, removes that dependence; the MoCo paper's detection protocol does the same
    (docs/evaluation.md#detection). It is newly initialised: the exported checkpoint has no weights for it.
    """

    @classmethod
    def _build_res5_block(cls, cfg):
        res5, out_channels = super()._build_res5_block(cfg)  # nn.Sequential of the res5 bottleneck blocks
        res5.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
        return res5, out_channels


class Trainer(DefaultTrainer):
    """detectron2's DefaultTrainer; only the evaluator is chosen here (DefaultTrainer leaves it to the user)."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        kind = MetadataCatalog.get(dataset_name).evaluator_type  # set by detectron2's builtin dataset registration
        if kind == "coco":
            return COCOEvaluator(dataset_name, output_dir=output_folder)  # bbox AP and, with MASK_ON, segm AP
        if kind == "pascal_voc":
            return PascalVOCDetectionEvaluator(dataset_name)  # AP, AP50, AP75; VOC07's 11-point metric on 2007
        raise NotImplementedError(f"no evaluator for dataset {dataset_name!r} (evaluator_type {kind!r})")


def setup(args):
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)  # follows _BASE_ to Base-RCNN-C4-BN.yaml
    cfg.merge_from_list(args.opts)  # MODEL.WEIGHTS, OUTPUT_DIR, SEED, ... from the command line
    cfg.freeze()
    default_setup(cfg, args)  # logging, output dir, saves the merged config, seeds
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)  # loads MODEL.WEIGHTS (our .pkl, matching_heuristics) or resumes
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
