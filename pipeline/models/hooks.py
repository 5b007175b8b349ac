"""The forward-hook machinery every adapter shares: record layer outputs, and edit them for one request.

An adapter names its layers (`layer_modules`) and says which positions of a layer's output belong to
the clips of the forward pass under way (`own_positions`): Whisper's encoder pads to 30 s, Qwen2-Audio
mixes prompt text with audio tokens, HuBERT runs one clip at a time. Interventions then see only
[n, d_model] rows of one clip's own positions, whatever the model.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator, Sequence

import torch

Change = Callable[[torch.Tensor], torch.Tensor]  # [n, d_model] -> [n, d_model]
Span = slice | torch.Tensor  # positions of one batch row: a slice, or a boolean mask over the sequence
ALL = slice(None)


def _hidden(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


class HookedAdapter:
    """Base of the adapters: `layers`, `intervention(layer, change)`, `_recording(layers)`, batching."""

    batch_size = 1  # clips per forward pass in extraction; adapters that pad exactly raise it
    has_text = True  # False for encoders with no text output (steering then reads representations)

    def __init__(self) -> None:
        # One request at a time on the shared modules: a hook registered for one caller must never be
        # seen by another thread's forward pass. Re-entrant, so a steered call can run the model inside it.
        self.lock = threading.RLock()

    def layer_modules(self) -> dict[str, torch.nn.Module]:
        """Layer name -> the module whose output is that layer's residual stream."""
        raise NotImplementedError

    def own_positions(self, layer: str, hidden: torch.Tensor) -> Sequence[Span]:
        """For the forward pass under way, each batch row's own positions in `hidden` [batch, seq, d]."""
        return [ALL] * hidden.shape[0]

    @property
    def layers(self) -> list[str]:
        return list(self.layer_modules())

    def _module(self, layer: str) -> torch.nn.Module:
        modules = self.layer_modules()
        if layer not in modules:
            raise ValueError(f"unknown layer {layer!r}; this model has {list(modules)}")
        return modules[layer]

    @contextlib.contextmanager
    def intervention(self, layer: str, change: Change) -> Iterator[None]:
        """Request-scoped edit: inside the with-block, `layer`'s output at each clip's own positions x [n, d]
        is replaced by change(x). The hook is removed on exit, exception or not."""

        def hook(_module, _inputs, output):
            hidden = _hidden(output)
            edited = hidden.clone()
            for row, span in enumerate(self.own_positions(layer, hidden)):
                rows = hidden[row, span]
                if rows.shape[0]:
                    edited[row, span] = change(rows).to(hidden.dtype)
            return (edited, *output[1:]) if isinstance(output, tuple) else edited

        with self.lock:
            handle = self._module(layer).register_forward_hook(hook)
            try:
                yield
            finally:
                handle.remove()

    @contextlib.contextmanager
    def _recording(self, layers: Sequence[str], every_step: bool = False) -> Iterator[dict]:
        """Forward hooks that record each layer's output [batch, seq, d]; removed on exit, exception or not.
        every_step: keep a list of the outputs of every call (one per generation step with a KV cache)."""
        seen: dict = {}
        handles = []
        try:
            for layer in layers:
                def hook(_module, _inputs, output, layer=layer):
                    if every_step:
                        seen.setdefault(layer, []).append(_hidden(output))
                    else:
                        seen[layer] = _hidden(output)
                handles.append(self._module(layer).register_forward_hook(hook))
            yield seen
        finally:
            for handle in handles:
                handle.remove()

    def hidden_states_batch(self, audios: Sequence, layers: Sequence[str]) -> list[dict]:
        """hidden_states for each clip (one forward per clip unless the adapter batches)."""
        return [self.hidden_states(audio, layers) for audio in audios]

    def own_rows(self, layer: str, hidden: torch.Tensor) -> list[torch.Tensor]:
        """The recorded [batch, seq, d] cut to each clip's own [n, d] rows."""
        return [hidden[row, span] for row, span in enumerate(self.own_positions(layer, hidden))]
