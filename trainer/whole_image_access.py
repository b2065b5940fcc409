"""How a trainer's network predicts whole images, for validation, testing and bundles.

A mixin of :class:`~trainer.model_trainer_base.ModelTrainerBase`: the runner that turns a
whole image into the network's outputs (resized input, patches stitched, or coarse to fine,
with flip TTA), and the :class:`~inference.predictor.InferenceModel` that a
:class:`~inference.predictor.Predictor` decodes.
"""

from __future__ import annotations

from typing import Any

import torch

from inference.layout import LayoutDecoder
from inference.predictor import InferenceModel, ResultsSettings
from inference.whole_image import WholeImageRunner, tta_flip_axis
from utils.errors import CheckpointError, ConfigError


class WholeImageMixin:
    """The whole-image steps of a trainer (``inference_forward`` is the one to override for
    another way of predicting a whole image)."""

    def whole_image_runner(self) -> WholeImageRunner:
        """How this model predicts whole images (inference/whole_image.py)."""
        patch = self.settings.patch
        coarse = None
        if self.sampling.inference_mode == "coarse_to_fine":
            if self.coarse_model is None:
                if self.coarse_model_loader is None:
                    raise ConfigError(
                        "SAMPLER.PATCH.INFERENCE_MODE coarse_to_fine: build the trainer with "
                        "trainer.model_trainer_index.build_trainer, which loads the coarse model"
                    )
                self.coarse_model = self.coarse_model_loader()
                if self.coarse_model.landmark_ids != self.landmark_ids:
                    raise CheckpointError(
                        f"{patch.coarse_checkpoint}: predicts landmarks "
                        f"{self.coarse_model.landmark_ids}, this model {self.landmark_ids}"
                    )
            coarse = self.coarse_model
        return WholeImageRunner(
            self.label_generator,
            mode=self.sampling.inference_mode,
            window_size=tuple(patch.patch_size),
            stride=tuple(patch.stitch_stride),
            batch_size=self.solver.batch_size,
            input_multiple=self.input_multiple,
            tta_flip=self.inference.tta_flip,
            flip_axis=tta_flip_axis(self.inference.tta_flip, self.trained_augmentation),
            flip_pairs=tuple(self.flip_pairs),
            position_channels=self.sampling.input_channels == 3,
            mixed_precision=self.use_amp,
            precision=self.inference.precision,
            coarse=coarse,
        )

    def inference_model(self, source: str = "model") -> InferenceModel:
        """This trainer's network (in eval mode), runner, decoder and landmarks, for a
        :class:`~inference.predictor.Predictor`; ``source`` names it in errors."""
        self.network.eval()
        return InferenceModel(
            network=self.network,
            runner=self.whole_image_runner(),
            decode=self.get_coords_from_heatmap,
            label_generator=self.label_generator,
            landmark_ids=list(self.landmark_ids),
            device=self.device,
            source=source,
            layout=LayoutDecoder.from_settings(
                self.shape_model, self.label_generator.candidate_maps, self.inference, source
            ),
        )

    def results_settings(self) -> ResultsSettings:
        """How this run writes its results folders (OUTPUT and INFERENCE keys)."""
        return ResultsSettings.from_settings(
            self.inference, self.output_dir, self.data.dataset_name
        )

    def inference_forward(self, images: torch.Tensor) -> Any:
        """The network's output for whole (B, C, H, W) images as at test time (flip TTA
        included), in the label generator's ``to_average`` form."""
        return self.whole_image_runner()(self.network, images)

    @torch.no_grad()
    def check_stitch_stride(self) -> None:
        """Stitch one blank patch-sized image as inference will, so that a STITCH_STRIDE that
        does not fit the network's output grid is refused before training, not after it."""
        was_training = self.network.training
        self.network.eval()
        size = self.sampling.network_input_size
        blank = torch.zeros(1, self.sampling.input_channels, *size, device=self.device)
        try:
            self.whole_image_runner().whole(self.network, blank)
        except ValueError as err:  # a stride that does not fit the network's output grid
            raise ConfigError(f"SAMPLER.PATCH.STITCH_STRIDE: {err}") from None
        self.network.train(was_training)
