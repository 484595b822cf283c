from torchvision._placeholder import placeholder


def __getattr__(name: str) -> type:
    return placeholder(__name__, name)
