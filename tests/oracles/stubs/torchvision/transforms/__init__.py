from torchvision._placeholder import placeholder
from torchvision.transforms import functional  # noqa: F401


def __getattr__(name: str) -> type:
    return placeholder(__name__, name)
