"""The error a user can fix: bad input or settings. The CLI prints its message on one line and exits 2."""


class UsageError(ValueError):
    """Bad input or settings; the message names the input and the option that fixes it."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name if empty), at most ``limit`` characters."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:limit]


def describe_load_error(error: BaseException) -> str:
    """Why a weights or checkpoint file could not be loaded, in words a user can act on."""
    message = str(error)
    if "GLOBAL" in message:  # torch's weights-only unpickler met a class or function: code could run
        return (
            "refused: it holds Python objects that could run code; use a .safetensors file or one saved with "
            "torch.save(state_dict)"
        )
    if "Error(s) in loading state_dict" in message:
        detail = next((line.strip() for line in message.splitlines()[1:] if line.strip()), "")
        return f"the weights do not fit this architecture ({detail[:160]})"
    damaged = ("Weights only load failed", "zip archive", "magic number", "deserializing header", "corrupt")
    damaged += ("allow_pickle", "Failed to interpret file")  # numpy, for .npy files
    if isinstance(error, (KeyError, EOFError, IndexError)) or any(sign in message for sign in damaged):
        return "the file is damaged or not in a format it claims (PyTorch, safetensors, NumPy)"
    return first_line(error)
