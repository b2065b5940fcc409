"""MODEL.ARCHITECTURE → label generator class. Register your own generator here."""

from transforms.generate_labels import LabelGenerator, PHDNetLabelGenerator, UNetLabelGenerator
from utils.errors import ConfigError

LABEL_GENERATOR_INDEX: dict[str, type[LabelGenerator]] = {
    "U-Net": UNetLabelGenerator,
    "PHD-Net": PHDNetLabelGenerator,
}


def get_label_generator_class(architecture: str) -> type[LabelGenerator]:
    """The generator registered for ``architecture``; an unknown key lists the valid ones."""
    if architecture not in LABEL_GENERATOR_INDEX:
        raise ConfigError(
            f"No label generator for MODEL.ARCHITECTURE {architecture!r}; available: "
            f"{sorted(LABEL_GENERATOR_INDEX)} (register new ones in "
            "transforms/label_generator_index.py)"
        )
    return LABEL_GENERATOR_INDEX[architecture]
