"""MODEL.ARCHITECTURE → label generator class. Register your own generator here."""

from transforms.generate_labels import LabelGenerator, PHDNetLabelGenerator, UNetLabelGenerator
from utils.registry import look_up

LABEL_GENERATOR_INDEX: dict[str, type[LabelGenerator]] = {
    "U-Net": UNetLabelGenerator,
    "PHD-Net": PHDNetLabelGenerator,
}


def get_label_generator_class(architecture: str) -> type[LabelGenerator]:
    """The generator registered for ``architecture``; an unknown key lists the valid ones."""
    return look_up(
        LABEL_GENERATOR_INDEX,
        architecture,
        "MODEL.ARCHITECTURE",
        "transforms/label_generator_index.py",
    )
