"""The error a user can fix: bad input or settings. The CLI prints its message on one line and exits 2."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager


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


@contextmanager
def explained_step_errors(device: str, compiled: bool, sizes: Callable[[], tuple[int, int, int]]) -> Iterator[None]:
    """Turn running out of ``device`` memory into a :class:`UsageError` that names the settings to lower, and a
    failed ``torch.compile`` (it compiles at the first step and the first backward) into one that names
    ``--model.compile``. ``sizes()`` gives (prompts, image side, copies) for the message."""
    import torch  # here, so that importing this module stays light

    try:
        yield
    except torch.OutOfMemoryError as e:
        p, size, copies = sizes()
        raise UsageError(
            f"out of {device} memory inverting {p} prompts x {copies} copies ({size} px images): lower "
            f"--data.batch_size (now {p}) or --model.copies (now {copies}); docs/benchmarks.md lists what fits"
        ) from e
    except torch._dynamo.exc.TorchDynamoException as e:
        if not compiled:
            raise
        cause = getattr(e, "inner_exception", None) or e  # the backend's own error
        raise UsageError(
            f"--model.compile=true: torch.compile failed on {device} ({type(cause).__name__}: {first_line(cause)}); "
            "run without it, or set CLIP_INVERSION_DEBUG=1 for the traceback"
        ) from e
