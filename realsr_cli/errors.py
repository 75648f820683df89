"""The one error hierarchy. Each class carries the exit code the CLI maps it to; str(err) is the user-facing message.

No torch here.
"""

import signal


class RealSRError(Exception):
    """Base of every error realsr reports to a user."""

    exit_code = 1


class ConfigError(RealSRError):
    """A bad option, option combination or config file (same code as Click's usage errors)."""

    exit_code = 2


class InputError(RealSRError):
    """An unreadable, corrupt, too large or missing image, checkpoint or data folder; an unwritable output."""

    exit_code = 3


class ModelError(RealSRError):
    """An unknown architecture, state-dict mismatch, unsupported precision, or an export that fails its parity check."""

    exit_code = 4


class BackendError(RealSRError):
    """onnxruntime or torch missing, a provider that cannot run the model, out of device memory."""

    exit_code = 5


EXIT_SOME_FAILED = 6  # a batch finished but at least one input failed
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT
# stopped like Ctrl-C (KeyboardInterrupt, EXIT_INTERRUPTED): a polite kill and a closed terminal must clean up too
INTERRUPT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
