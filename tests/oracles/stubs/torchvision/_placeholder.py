"""Any name asked of a stand-in module is a class that refuses to be used."""


def placeholder(module: str, name: str) -> type:
    def refuse(*args, **kwargs):
        raise RuntimeError(f"{module}.{name} is a test stand-in (the real torchvision is not installed)")

    return type(name, (), {"__init__": refuse, "__module__": module})
